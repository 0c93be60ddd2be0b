namespace QuantTasks.Cli.Tests;

/// <summary>Runs <c>dotnet quant</c> in-process with captured output, from a given working folder.</summary>
internal static class CliRunner
{
    private static readonly Lock s_directoryGate = new();

    public static (int Exit, string Out, string Err) Run(string workingFolder, params string[] args) =>
        Run(workingFolder, CancellationToken.None, args);

    public static (int Exit, string Out, string Err) Run(string workingFolder, CancellationToken cancellation, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit;

        // The working folder is process-wide; tests that change it take turns.
        lock (s_directoryGate)
        {
            var previous = Environment.CurrentDirectory;
            Environment.CurrentDirectory = workingFolder;
            try
            {
                exit = QuantApp.Run(args, stdout, stderr, cancellation);
            }
            finally
            {
                Environment.CurrentDirectory = previous;
            }
        }

        return (exit, stdout.ToString(), stderr.ToString());
    }
}
