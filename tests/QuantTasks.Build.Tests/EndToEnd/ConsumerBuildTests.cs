using System.Text.RegularExpressions;
using QuantTasks.Caching;
using QuantTasks.Tests;

namespace QuantTasks.Build.Tests.EndToEnd;

/// <summary>
/// `dotnet build` of projects outside the repository that reference the packages packed from this checkout:
/// the user's experience, including the bad inputs a build meets.
/// </summary>
[Collection(SharedPackageFeed.Name)]
public sealed partial class ConsumerBuildTests
{
    private const string EngineRan = "QuantTasks: compressing the models of";

    private readonly PackageFeed _feed;

    public ConsumerBuildTests(PackageFeed feed) => _feed = feed;

    [Fact]
    public void A_consumer_builds_from_the_local_feed_runs_and_skips_the_engine_when_nothing_changed()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy();
        File.WriteAllText(Path.Combine(app.Folder, "Directory.Build.targets"), """
            <Project>
              <Target Name="MyBeforeCompress" AfterTargets="QuantBeforeCompress"><Message Importance="high" Text="hook: before compress" /></Target>
              <Target Name="MyAfterCompress" AfterTargets="QuantAfterCompress"><Message Importance="high" Text="hook: after compress" /></Target>
            </Project>
            """);

        var first = app.Build();
        Assert.True(first.Exit == 0, first.Output);
        Assert.Contains(EngineRan, first.Output, StringComparison.Ordinal);
        var before = first.Output.IndexOf("hook: before compress", StringComparison.Ordinal);
        var after = first.Output.IndexOf("hook: after compress", StringComparison.Ordinal);
        Assert.True(before >= 0 && before < first.Output.IndexOf(EngineRan, StringComparison.Ordinal) && after > before, first.Output);
        Assert.Contains("Digits: analyze", first.Output, StringComparison.Ordinal);
        Assert.False(app.Report().GetProperty("cache_hit").GetBoolean());

        var run = DotNet.Run(app.Folder, "run", "--no-build");
        Assert.True(run.Exit == 0, run.Output);
        Assert.Contains("logits: 10", run.Output, StringComparison.Ordinal);
        Assert.Matches(@"tensors: fc1\.weight=\d, fc2\.weight=\d, fc3\.weight=\d", run.Output);

        // libtorch stays out of the app: neither the package nor the build copies it.
        var output = Path.Combine(app.Folder, "bin", "Debug", "net10.0");
        Assert.Empty(Directory.EnumerateFiles(output, "*torch*", SearchOption.AllDirectories));
        Assert.True(new FileInfo(_feed.Package("QuantTasks")).Length < 5_000_000, "the QuantTasks package holds no native library");
        AssertLeanToolPackages();

        Assert.DoesNotContain("QT1008", first.Output, StringComparison.Ordinal);

        var second = app.Build();
        Assert.True(second.Exit == 0, second.Output);
        Assert.DoesNotContain(EngineRan, second.Output, StringComparison.Ordinal);
        Assert.Contains("Skipping target \"QuantCompress\"", second.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void The_tool_installs_from_the_feed_and_quantizes_with_libtorch_from_NuGet()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy();
        var tools = Path.Combine(app.Folder, "tools");

        var install = DotNet.Run(app.Folder, "tool", "install", "dotnet-quant", "--tool-path", tools, "--add-source", _feed.Folder, "--version", _feed.Version);
        Assert.True(install.Exit == 0, install.Output);
        var shim = Path.Combine(tools, OperatingSystem.IsWindows() ? "dotnet-quant.exe" : "dotnet-quant");

        var version = Tool(shim, app.Folder, "--version");
        Assert.True(version.Exit == 0, version.Output);
        Assert.Matches(@"^\d+\.\d+\.\d+", version.Output.Trim());

        // The Hessian analysis loads libtorch, which the tool package does not carry: it comes from NuGet.
        var quantize = Tool(shim, app.Folder, "quantize", "--out", "tool-out", "--no-cache");
        Assert.True(quantize.Exit == 0, quantize.Output);
        Assert.Contains("Digits: analyze", quantize.Output, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(app.Folder, "tool-out", "Digits.qtblob")));
        Assert.DoesNotContain(Directory.EnumerateFiles(tools, "*torch*", SearchOption.AllDirectories), f => !f.EndsWith("TorchSharp.dll", StringComparison.Ordinal) && !f.Contains("LibTorchSharp", StringComparison.Ordinal));
    }

    /// <summary>
    /// The tool's top package only points to one package per platform; each of those holds that platform's ONNX
    /// Runtime native library and no other, and none holds libtorch.
    /// </summary>
    private void AssertLeanToolPackages()
    {
        Assert.True(new FileInfo(_feed.Package("dotnet-quant")).Length < 1_000_000, "the tool's top package points to the platform packages");
        var natives = new Dictionary<string, string> { ["linux-x64"] = "libonnxruntime.so", ["win-x64"] = "onnxruntime.dll", ["osx-arm64"] = "libonnxruntime.dylib" };
        foreach (var rid in PackageFeed.ToolRuntimes)
        {
            var package = _feed.Package("dotnet-quant." + rid);
            Assert.True(new FileInfo(package).Length < 60_000_000, $"{package}: {new FileInfo(package).Length:N0} bytes");
            using var tool = System.IO.Compression.ZipFile.OpenRead(package);
            Assert.DoesNotContain(tool.Entries, e => e.Name.StartsWith("libtorch", StringComparison.Ordinal) || e.Name is "torch_cpu.dll" or "torch.dll");
            Assert.Contains(tool.Entries, e => e.Name == natives[rid]);
            Assert.DoesNotContain(tool.Entries, e => natives.Where(n => n.Key != rid).Any(n => e.Name == n.Value));
        }
    }

    private static (int Exit, string Output) Tool(string executable, string folder, params string[] args)
    {
        var start = new System.Diagnostics.ProcessStartInfo(executable) { WorkingDirectory = folder, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = System.Diagnostics.Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(10)), "the tool did not finish in 10 minutes");
        return (process.ExitCode, stdout + stderr.Result);
    }

    [Fact]
    public void An_app_without_ONNX_Runtimes_native_package_is_warned_when_it_builds_and_told_what_to_add_when_it_runs()
    {
        // What a user gets with only `dotnet add package QuantTasks` and `QuantTasks.Runtime`: the managed API, no native.
        using var app = new ConsumerProject(_feed, nativeOnnxRuntime: false);
        app.WritePolicy(sensitivity: "none");

        var build = app.Build();
        Assert.True(build.Exit == 0, build.Output);
        Assert.Matches(@"Consumer\.csproj(\(\d+,\d+\))? ?: warning QT1008: Consumer compiles QuantTasks loaders, but no ONNX Runtime native library", build.Output);

        var run = DotNet.Run(app.Folder, "run", "--no-build");
        Assert.NotEqual(0, run.Exit);
        Assert.Contains("OnnxRuntimeNotFoundException", run.Output, StringComparison.Ordinal);
        Assert.Contains("dotnet add package Microsoft.ML.OnnxRuntime", run.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_policy_that_cannot_meet_max_drop_fails_the_build_with_QT2001_and_still_writes_the_report()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy(sensitivity: "none", bits: "[1]", averageBits: 1.2, maxDrop: 0);

        var (exit, output) = app.Build();

        Assert.NotEqual(0, exit);
        // At the line of accuracy.max_drop, which an IDE opens on a click.
        Assert.Matches(@"quant\.yaml\(19,13\): error QT2001: Model Digits lost \d+\.\d\d pp of top1 \(95\.15% float", output);
        Assert.False(app.Report().GetProperty("accuracy").GetProperty("passed").GetBoolean());
        Assert.True(File.Exists(Path.Combine(app.Intermediate, "out", "report.md")));
        Assert.True(File.Exists(Path.Combine(app.Intermediate, "out", "report.svg")));

        // Failing again on the next build (from the cache), not silently passing.
        var again = app.Build();
        Assert.NotEqual(0, again.Exit);
        Assert.Contains("error QT2001", again.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_a_policy_the_package_does_nothing_and_says_so_once()
    {
        using var app = new ConsumerProject(_feed, usesModel: false);

        var (exit, output) = app.Build();

        Assert.True(exit == 0, output);
        Assert.Single(NoPolicy().Matches(output));
        Assert.DoesNotContain(EngineRan, output, StringComparison.Ordinal);
        Assert.DoesNotContain(": error", output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_policy_naming_a_missing_model_is_an_error_at_its_line_and_column()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy(model: "models/missing.onnx");

        var (exit, output) = app.Build();

        Assert.NotEqual(0, exit);
        Assert.Matches(@"quant\.yaml\(3,11\): error QT1106: .*missing\.onnx", output);
    }

    [Fact]
    public void A_changed_model_is_compressed_again_although_the_cache_holds_the_old_entry()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy(sensitivity: "none");
        Assert.Equal(0, app.Build().Exit);
        var before = app.Report();

        // The same file name, another network (LeNet-5 reads the same digits).
        File.Copy(Fixtures.Model("lenet5.onnx"), Path.Combine(app.Folder, "models", "digits.onnx"), overwrite: true);
        var (exit, output) = app.Build();

        Assert.True(exit == 0, output);
        Assert.Contains(EngineRan, output, StringComparison.Ordinal);
        var after = app.Report();
        Assert.False(after.GetProperty("cache_hit").GetBoolean());
        Assert.NotEqual(before.GetProperty("content_hash").GetString(), after.GetProperty("content_hash").GetString());
        Assert.Contains(after.GetProperty("tensors").EnumerateArray(), t => t.GetProperty("name").GetString() == "conv1.weight");
        Assert.Equal(2, new ContentCache(app.CacheFolder).List().Count(e => e.Valid));

        // After a clean, the old model's entry is used again once the model is back.
        File.Copy(Fixtures.Model("mlp.onnx"), Path.Combine(app.Folder, "models", "digits.onnx"), overwrite: true);
        Assert.Equal(0, DotNet.Run(app.Folder, "clean", "-nodeReuse:false").Exit);
        Assert.Equal(0, app.Build().Exit);
        Assert.True(app.Report().GetProperty("cache_hit").GetBoolean());
        Assert.Equal(before.GetProperty("content_hash").GetString(), app.Report().GetProperty("content_hash").GetString());
    }

    [Fact]
    public async Task Two_builds_at_once_sharing_one_cache_both_succeed_and_leave_one_valid_entry()
    {
        var cache = Path.Combine(Path.GetTempPath(), "quanttasks-tests", "shared-cache-" + Guid.NewGuid().ToString("N"));
        using var first = new ConsumerProject(_feed, cache);
        using var second = new ConsumerProject(_feed, cache);
        first.WritePolicy(sensitivity: "none");
        second.WritePolicy(sensitivity: "none");
        try
        {
            var builds = await Task.WhenAll(new[] { first, second }.Select(app => Task.Run(() => app.Build())));

            Assert.All(builds, b => Assert.True(b.Exit == 0, b.Output));
            var entries = new ContentCache(cache).List();
            Assert.Single(entries);
            Assert.True(entries[0].Valid);
            Assert.Equal(File.ReadAllBytes(Path.Combine(first.Intermediate, "out", "Digits.qtblob")), File.ReadAllBytes(Path.Combine(second.Intermediate, "out", "Digits.qtblob")));
        }
        finally
        {
            PackageFeed.TryDelete(cache);
        }
    }

    [Fact]
    public void A_build_killed_during_quantization_builds_cleanly_the_next_time()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy();

        var killed = DotNet.Run(app.Folder, ["build", "-tl:off", "-v:n", "-nodeReuse:false", "-p:UseSharedCompilation=false"],
            line => line.Contains("Digits: analyze", StringComparison.Ordinal));
        Assert.NotEqual(0, killed.Exit);
        Assert.False(File.Exists(Path.Combine(app.Intermediate, "quant.stamp")));

        var (exit, output) = app.Build();
        Assert.True(exit == 0, output);
        Assert.Contains(EngineRan, output, StringComparison.Ordinal);
        Assert.All(new ContentCache(app.CacheFolder).List(), e => Assert.True(e.Valid, e.Key));
        Assert.Equal(0, DotNet.Run(app.Folder, "run", "--no-build").Exit);
    }

    [Fact]
    public void Design_time_builds_never_run_the_engine()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy(sensitivity: "none");
        Assert.Equal(0, DotNet.Run(app.Folder, "restore").Exit);

        // What an IDE asks for: the compiler's command line without compiling, in a design-time build.
        var (exit, output) = DotNet.Run(app.Folder, "msbuild", "-t:Compile", "-p:DesignTimeBuild=true", "-p:BuildingProject=false",
            "-p:SkipCompilerExecution=true", "-p:ProvideCommandLineArgs=true", "-tl:off", "-v:n", "-nodeReuse:false");

        Assert.DoesNotContain(EngineRan, output, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(app.Intermediate, "out")), output);
        Assert.True(exit == 0 || output.Contains("DigitsModel", StringComparison.Ordinal), output);
    }

    [Fact]
    public void With_QuantEnabled_false_the_engine_never_runs_and_the_last_outputs_still_build()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy(sensitivity: "none");
        Assert.Equal(0, app.Build().Exit);
        File.SetLastWriteTimeUtc(Path.Combine(app.Folder, "models", "digits.onnx"), DateTime.UtcNow.AddMinutes(1));

        var (exit, output) = app.Build("-p:QuantEnabled=false");

        Assert.True(exit == 0, output);
        Assert.DoesNotContain(EngineRan, output, StringComparison.Ordinal);
        Assert.Contains("logits: 10", DotNet.Run(app.Folder, "run", "--no-build").Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Clean_removes_what_the_build_made()
    {
        using var app = new ConsumerProject(_feed);
        app.WritePolicy(sensitivity: "none");
        Assert.Equal(0, app.Build().Exit);
        var made = new[] { "out/DigitsModel.g.cs", "out/Digits.qtblob", "out/report.json", "quant.manifest", "quant.stamp" }
            .Select(f => Path.Combine(app.Intermediate, f)).ToArray();
        Assert.All(made, f => Assert.True(File.Exists(f), f));

        Assert.Equal(0, DotNet.Run(app.Folder, "clean", "-nodeReuse:false").Exit);

        Assert.All(made, f => Assert.False(File.Exists(f), f));
    }

    [GeneratedRegex("QuantTasks: no policy at .*quant\\.yaml, so no model is compressed")]
    private static partial Regex NoPolicy();
}
