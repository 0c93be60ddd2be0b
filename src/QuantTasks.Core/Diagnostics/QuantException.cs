namespace QuantTasks.Diagnostics;

/// <summary>
/// The one exception type for every error a user can act on. It carries a <see cref="ErrorCode"/>, a message
/// that names what is wrong and says what to do, and where it is (file and line, tensor or op).
/// Anything else that escapes is a bug and is reported as <see cref="ErrorCode.Internal"/>.
/// </summary>
internal sealed class QuantException : Exception
{
    /// <summary>Creates an error.</summary>
    /// <param name="code">What kind of error it is.</param>
    /// <param name="message">What is wrong, naming the tensor or op concerned, and what to do.</param>
    /// <param name="location">The file (and line) concerned, when there is one.</param>
    /// <param name="innerException">The lower-level failure, shown only with <c>--verbose</c>.</param>
    public QuantException(ErrorCode code, string message, SourceLocation? location = null, Exception? innerException = null)
        : base(message, innerException)
    {
        Code = code;
        Location = location;
    }

    /// <summary>
    /// Further errors found in the same pass (every problem of one policy file, say), shown after this one so
    /// that the user fixes them all in one go.
    /// </summary>
    public IReadOnlyList<QuantException> Additional { get; private init; } = [];

    /// <summary>This error followed by <see cref="Additional"/>.</summary>
    public IEnumerable<QuantException> All => Additional.Prepend(this);

    /// <summary>The first of <paramref name="errors"/>, carrying the rest as <see cref="Additional"/>.</summary>
    public static QuantException Combine(IReadOnlyList<QuantException> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        if (errors.Count == 0)
        {
            throw new ArgumentException("At least one error is needed.", nameof(errors));
        }

        var first = errors[0];
        return errors.Count == 1
            ? first
            : new QuantException(first.Code, first.Message, first.Location, first.InnerException) { Additional = errors.Skip(1).ToArray() };
    }

    /// <summary>What kind of error this is.</summary>
    public ErrorCode Code { get; }

    /// <summary>The file (and line) concerned, when there is one.</summary>
    public SourceLocation? Location { get; }

    /// <summary>The command line's exit code for this error.</summary>
    public ExitCode ExitCode => Code.ExitCode();

    /// <summary>
    /// The error in MSBuild's canonical form, <c>file(line,col): error QT1102: message</c>, which build servers
    /// and IDEs turn into a clickable error; <paramref name="origin"/> stands in for the file when there is none.
    /// </summary>
    public string ToCanonicalString(string origin = "dotnet-quant") =>
        $"{Location?.ToString() ?? origin}: error {Code.Format()}: {Message}";
}
