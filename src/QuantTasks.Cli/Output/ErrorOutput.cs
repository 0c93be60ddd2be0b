using QuantTasks.Diagnostics;

namespace QuantTasks.Cli;

/// <summary>An error as JSON: <c>{"code", "message", "file", "line", "column"}</c>.</summary>
internal sealed record ErrorOutput(string Code, string Message, string? File, int? Line, int? Column)
{
    public static ErrorOutput From(QuantException error) => new(
        error.Code.Format(),
        error.Message,
        error.Location?.File,
        error.Location is { Line: > 0 } l ? l.Line : null,
        error.Location is { Column: > 0 } c ? c.Column : null);
}
