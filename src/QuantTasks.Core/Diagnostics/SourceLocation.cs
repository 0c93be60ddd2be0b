namespace QuantTasks.Diagnostics;

/// <summary>
/// Where an error points: a file, and within it a 1-based line and column when known (YAML positions).
/// </summary>
/// <param name="File">The file's path as the user gave it or as the tool resolved it.</param>
/// <param name="Line">1-based line, or 0 when the error concerns the whole file.</param>
/// <param name="Column">1-based column, or 0 when unknown.</param>
internal sealed record SourceLocation(string File, int Line = 0, int Column = 0)
{
    /// <summary>MSBuild's canonical origin: <c>file</c>, <c>file(line)</c> or <c>file(line,column)</c>.</summary>
    public override string ToString() => (Line, Column) switch
    {
        (<= 0, _) => File,
        (_, <= 0) => FormattableString.Invariant($"{File}({Line})"),
        _ => FormattableString.Invariant($"{File}({Line},{Column})"),
    };
}
