using System.Text.RegularExpressions;

namespace QuantTasks.Policy;

/// <summary>Tensor-name globs of the policy: <c>*</c> matches any run of characters, <c>?</c> one character.</summary>
internal static class Glob
{
    /// <summary>Whether <paramref name="name"/> matches <paramref name="pattern"/> (whole name, case-sensitive).</summary>
    public static bool IsMatch(string pattern, string name)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var regex = "^" + Regex.Escape(pattern).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$";
        return Regex.IsMatch(name, regex, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
    }
}
