using System.CommandLine;
using QuantTasks.Cli.Commands;
using QuantTasks.Diagnostics;

namespace QuantTasks.Cli;

/// <summary>
/// The <c>dotnet quant</c> command line: parses arguments, runs one command, and turns every failure into the
/// contract's exit code and a <c>QTnnnn</c> message in MSBuild's canonical form on standard error.
/// </summary>
internal static class QuantApp
{
    /// <summary>The exit code of a run stopped by Ctrl+C or SIGTERM (128 + SIGINT, as shells report it).</summary>
    public const int CancelledExitCode = 130;

    /// <summary>Runs the command line; returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellation = default)
    {
        var verbose = new Option<bool>("--verbose", "-v")
        {
            Description = "Show stack traces and other detail when something fails.",
            Recursive = true,
        };
        var root = new RootCommand("QuantTasks: Hessian-aware quantization and entropy coding of ONNX models.")
        {
            verbose,
        };
        var console = new CommandConsole(stdout, stderr) { Cancellation = cancellation };
        root.Add(InitCommand.Create(console));
        root.Add(ValidateCommand.Create(console));
        root.Add(InspectCommand.Create(console));
        root.Add(AnalyzeCommand.Create(console));
        root.Add(QuantizeCommand.Create(console));
        root.Add(DecodeCommand.Create(console));
        root.Add(EvalCommand.Create(console));
        root.Add(CacheCommand.Create(console));

        var parse = root.Parse(args);
        console.Verbose = parse.GetValue(verbose);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                stderr.WriteLine($"dotnet-quant: error {ErrorCode.Usage.Format()}: {error.Message} Run 'dotnet quant --help' for the commands and options.");
            }

            return (int)ExitCode.BadInput;
        }

        try
        {
            return parse.Invoke(new InvocationConfiguration
            {
                Output = stdout,
                Error = stderr,
                EnableDefaultExceptionHandler = false,
            });
        }
        catch (QuantException e)
        {
            console.Report(e);
            return (int)e.ExitCode;
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            stderr.WriteLine("dotnet-quant: cancelled; no output was written.");
            return CancelledExitCode;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            var wrapped = new QuantException(ErrorCode.Internal,
                $"Internal error: {e.GetType().Name}: {e.Message} This is a bug in QuantTasks; please report it with the output of the same command run with --verbose.",
                innerException: e);
            console.Report(wrapped);
            return (int)ExitCode.Internal;
        }
    }
}
