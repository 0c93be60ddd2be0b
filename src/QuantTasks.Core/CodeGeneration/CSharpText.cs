using System.Globalization;
using System.Text;
using QuantTasks.Diagnostics;

namespace QuantTasks.CodeGeneration;

/// <summary>
/// Text that goes into generated C#. Model file names, tensor names and namespaces come from files a pull request
/// can change, so nothing is pasted in as it is: literals escape every character outside printable ASCII,
/// comments cannot be ended early by any of C#'s line terminators, and names must be identifiers.
/// </summary>
internal static class CSharpText
{
    // C#'s reserved keywords: a namespace segment or class named after one gets the verbatim prefix @.
    private static readonly HashSet<string> s_keywords = new(StringComparer.Ordinal)
    {
        "abstract", "as", "base", "bool", "break", "byte", "case", "catch", "char", "checked", "class", "const",
        "continue", "decimal", "default", "delegate", "do", "double", "else", "enum", "event", "explicit", "extern",
        "false", "finally", "fixed", "float", "for", "foreach", "goto", "if", "implicit", "in", "int", "interface",
        "internal", "is", "lock", "long", "namespace", "new", "null", "object", "operator", "out", "override",
        "params", "private", "protected", "public", "readonly", "ref", "return", "sbyte", "sealed", "short",
        "sizeof", "stackalloc", "static", "string", "struct", "switch", "this", "throw", "true", "try", "typeof",
        "uint", "ulong", "unchecked", "unsafe", "ushort", "using", "virtual", "void", "volatile", "while",
    };

    /// <summary>A regular string literal, quotes included, that denotes exactly <paramref name="text"/>.</summary>
    public static string Literal(string text)
    {
        var code = new StringBuilder(text.Length + 2).Append('"');
        foreach (var c in text)
        {
            _ = c switch
            {
                '"' => code.Append("\\\""),
                '\\' => code.Append("\\\\"),
                >= ' ' and <= '~' => code.Append(c),
                _ => code.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture)),
            };
        }

        return code.Append('"').ToString();
    }

    /// <summary>Text for a <c>//</c> comment: anything outside printable ASCII is shown as <c>\uXXXX</c>, so no line terminator can end the comment.</summary>
    public static string Comment(string text)
    {
        var code = new StringBuilder(text.Length);
        foreach (var c in text)
        {
            _ = c is >= ' ' and <= '~'
                ? code.Append(c)
                : code.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
        }

        return code.ToString();
    }

    /// <summary>Text for an XML documentation comment: a safe <see cref="Comment"/> with XML's special characters escaped.</summary>
    public static string XmlDoc(string text) =>
        Comment(text).Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
            .Replace(">", "&gt;", StringComparison.Ordinal);

    /// <summary>A type name as it may be written in code: an identifier, with @ before a keyword.</summary>
    /// <exception cref="QuantException">The name is not a C# identifier.</exception>
    public static string Identifier(string name)
    {
        if (!IsIdentifier(name))
        {
            throw new QuantException(ErrorCode.PolicyInvalidValue,
                $"'{Comment(name)}' cannot name a generated C# class: it must be letters, digits and underscores, not starting with a digit. Set the model's 'name' in quant.yaml.");
        }

        return s_keywords.Contains(name) ? "@" + name : name;
    }

    /// <summary>A dotted namespace as it may be written in code.</summary>
    /// <exception cref="QuantException">A segment is not a C# identifier.</exception>
    public static string Namespace(string @namespace)
    {
        var segments = @namespace.Split('.');
        if (segments.Any(s => !IsIdentifier(s)))
        {
            throw new QuantException(ErrorCode.PolicyInvalidValue,
                $"'{Comment(@namespace)}' is not a C# namespace: each dot-separated part must be letters, digits and underscores, not starting with a digit. Set the model's 'namespace' in quant.yaml, or the project's RootNamespace.");
        }

        return string.Join('.', segments.Select(s => s_keywords.Contains(s) ? "@" + s : s));
    }

    // Letters and digits of any script (C#'s identifier characters, less formatting and combining marks, which
    // the names made here never hold), and underscores, not starting with a digit.
    private static bool IsIdentifier(string name) =>
        name.Length > 0 && !char.IsDigit(name[0]) && name.All(c => c == '_' || char.IsLetterOrDigit(c));
}
