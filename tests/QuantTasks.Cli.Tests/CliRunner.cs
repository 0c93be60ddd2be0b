namespace QuantTasks.Cli.Tests;

/// <summary>Runs <c>dotnet quant</c> in-process with captured output, from a given working folder.</summary>
internal static class CliRunner
{
    private static readonly Lock s_directoryGate = new();

    public static (int Exit, string Out, string Err) Run(string workingFolder, params string[] args) =>
        Run(workingFolder, CancellationToken.None, args);

    public static (int Exit, string Out, string Err) Run(string workingFolder, CancellationToken cancellation, params string[] args) =>
        Measured(workingFolder, cancellation, args).Result;

    /// <summary>Runs a command line and also says how long it took and how many bytes the process allocated meanwhile (runs take turns, so the count is this run's).</summary>
    public static ((int Exit, string Out, string Err) Result, TimeSpan Elapsed, long Allocated) Measured(string workingFolder, CancellationToken cancellation, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit;
        long allocated;
        System.Diagnostics.Stopwatch clock;

        // The working folder is process-wide; tests that change it take turns. The clock starts once this run has
        // its turn: the time a hostile input may take is the run's own, not the queue's before it.
        lock (s_directoryGate)
        {
            clock = System.Diagnostics.Stopwatch.StartNew();
            var previous = Environment.CurrentDirectory;
            Environment.CurrentDirectory = workingFolder;
            var before = GC.GetTotalAllocatedBytes(precise: true);
            try
            {
                exit = QuantApp.Run(args, stdout, stderr, cancellation);
            }
            finally
            {
                allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
                Environment.CurrentDirectory = previous;
            }
        }

        return ((exit, stdout.ToString(), stderr.ToString()), clock.Elapsed, allocated);
    }
}
