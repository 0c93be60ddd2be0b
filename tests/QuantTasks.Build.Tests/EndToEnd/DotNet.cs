using System.Diagnostics;
using System.Text;

namespace QuantTasks.Build.Tests.EndToEnd;

/// <summary>Runs the dotnet CLI as a user would, with plain logs and no lingering build servers.</summary>
internal static class DotNet
{
    /// <summary>The repository checkout these tests were built from.</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    public static (int Exit, string Output) Run(string workingFolder, params string[] args) => Run(workingFolder, args, null);

    /// <summary>Runs dotnet; <paramref name="onLine"/> sees each line as it comes and may return true to kill the process tree.</summary>
    public static (int Exit, string Output) Run(string workingFolder, string[] args, Func<string, bool>? onLine, TimeSpan? timeout = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingFolder,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        // The test host's MSBuild settings must not leak into the builds under test.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || k.StartsWith("MSBuild", StringComparison.Ordinal)).ToArray())
        {
            start.Environment.Remove(name);
        }

        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["UseSharedCompilation"] = "false";
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        using var process = new Process { StartInfo = start };
        var output = new StringBuilder();
        var killed = false;
        void OnData(object sender, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(e.Data);
            }

            if (!killed && onLine?.Invoke(e.Data) == true)
            {
                killed = true;
                process.Kill(entireProcessTree: true);
            }
        }

        process.OutputDataReceived += OnData;
        process.ErrorDataReceived += OnData;
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"dotnet {string.Join(' ', args)} did not finish in time:\n{output}");
        }

        process.WaitForExit();
        lock (output)
        {
            return (process.ExitCode, output.ToString());
        }
    }

    /// <summary>`dotnet build` with plain, normal-verbosity logs, so stage messages and errors are in the output.</summary>
    public static (int Exit, string Output) Build(string projectFolder, params string[] extra) => Build(projectFolder, null, extra);

    /// <summary>`dotnet build` as above, with variables added to its environment (a CI secret, say).</summary>
    public static (int Exit, string Output) Build(string projectFolder, IReadOnlyDictionary<string, string>? environment, params string[] extra) =>
        Run(projectFolder, ["build", "-tl:off", "-v:n", "-nodeReuse:false", "-p:UseSharedCompilation=false", .. extra], null, null, environment);

    private static string FindRoot()
    {
        var folder = new DirectoryInfo(AppContext.BaseDirectory);
        while (folder is not null && !File.Exists(Path.Combine(folder.FullName, "QuantTasks.sln")))
        {
            folder = folder.Parent;
        }

        return folder?.FullName ?? throw new InvalidOperationException("The tests run from outside a QuantTasks checkout.");
    }
}
