using System.Text.Json;
using QuantTasks.Diagnostics;
using Spectre.Console;

namespace QuantTasks.Cli;

/// <summary>
/// Where a command writes: tables and progress for people through Spectre.Console, JSON for tools, errors in
/// MSBuild's canonical form. Commands get it instead of touching <see cref="Console"/>, so tests capture it.
/// </summary>
internal sealed class CommandConsole
{
    private readonly TextWriter _stdout;
    private readonly TextWriter _stderr;

    public CommandConsole(TextWriter stdout, TextWriter stderr)
    {
        _stdout = stdout;
        _stderr = stderr;
        var redirected = !ReferenceEquals(stdout, Console.Out) || Console.IsOutputRedirected;
        Human = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stdout),
            Ansi = redirected ? AnsiSupport.No : AnsiSupport.Detect,
            ColorSystem = redirected ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
            Interactive = redirected ? InteractionSupport.No : InteractionSupport.Detect,
        });
        if (redirected)
        {
            // Without a terminal Spectre assumes 80 columns and wraps tensor names; logs read better unwrapped.
            Human.Profile.Width = 200;
        }
    }

    /// <summary>Fires on Ctrl+C or SIGTERM; long commands pass it to the pipeline.</summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>Whether <c>--verbose</c> was given.</summary>
    public bool Verbose { get; set; }

    /// <summary>The console for people: tables, rules, progress.</summary>
    public IAnsiConsole Human { get; }

    /// <summary>The JSON options of every <c>--json</c> output: snake_case keys, no nulls, indented.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = true,
    };

    /// <summary>Writes a value as JSON to standard output.</summary>
    public void WriteJson<T>(T value) => _stdout.WriteLine(JsonSerializer.Serialize(value, JsonOptions));

    /// <summary>Writes a plain line to standard output.</summary>
    public void WriteLine(string text) => _stdout.WriteLine(text);

    /// <summary>Writes a note to standard error (kept off standard output so JSON stays parseable).</summary>
    public void Note(string text) => _stderr.WriteLine(text);

    /// <summary>Reports an error, and every further error it carries, to standard error.</summary>
    public void Report(QuantException error)
    {
        foreach (var each in error.All)
        {
            _stderr.WriteLine(each.ToCanonicalString());
        }

        if (Verbose)
        {
            _stderr.WriteLine(error.ToString());
        }
    }
}
