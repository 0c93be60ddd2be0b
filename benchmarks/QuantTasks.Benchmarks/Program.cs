using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using QuantTasks.Benchmarks;

var what = args.Length > 0 ? args[0] : "all";
if (what == "hessian-once")
{
    // A child process of the hessian benchmark: one whole analysis, startup included.
    HessianBenchmark.RunOnce(int.Parse(args[1], CultureInfo.InvariantCulture), int.Parse(args[2], CultureInfo.InvariantCulture));
    return;
}

var config = DefaultConfig.Instance.WithOptions(ConfigOptions.DisableOptimizationsValidator);

if (what is "entropy" or "all")
{
    Console.WriteLine("## Payload against the order-0 entropy bound");
    EntropyReport.Print();
}

if (what is "decode" or "all")
{
    var summary = BenchmarkRunner.Run<DecodeBenchmarks>(config);
    Console.WriteLine("## Symbol decoding (same stream, one core)");
    Console.WriteLine("| bits | decoder | symbols/s (millions) | time / Huffman | bytes |");
    Console.WriteLine("|---:|---|---:|---:|---:|");
    foreach (var group in summary.Reports.GroupBy(r => r.BenchmarkCase.Parameters["Bits"]))
    {
        var setup = new DecodeBenchmarks { Bits = (int)group.Key };
        setup.Setup();
        var sizes = setup.Sizes();
        var huffman = Mean(group.Single(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == "Huffman"));
        foreach (var report in group)
        {
            var name = report.BenchmarkCase.Descriptor.WorkloadMethod.Name;
            var mean = Mean(report);
            var bytes = name switch { "Huffman" => sizes.Huffman, "Brotli" => sizes.Brotli, _ => sizes.ZLib };
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {group.Key} | {name} | {setup.Symbols / mean * 1e3:0.0} | {mean / huffman:0.00} | {bytes:N0} |"));
        }
    }
}

if (what is "session" or "all")
{
    var summary = BenchmarkRunner.Run<SessionBenchmarks>(config);
    Console.WriteLine("## Bytes to a ready InferenceSession");
    Console.WriteLine("| model | float .onnx file (ms) | 4-bit blob (ms) | blob / file |");
    Console.WriteLine("|---|---:|---:|---:|");
    foreach (var group in summary.Reports.GroupBy(r => r.BenchmarkCase.Parameters["Model"]))
    {
        var file = Mean(group.Single(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == "FloatOnnxFile"));
        var blob = Mean(group.Single(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == "QuantizedBlob"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {group.Key} | {file / 1e6:0.00} | {blob / 1e6:0.00} | {blob / file:0.00} |"));
    }

    // An app creates its session once: the same comparison for single creations after a full collection, so
    // that the garbage collector's cost of repeatedly allocating the decoded model is not charged to each one.
    Console.WriteLine();
    Console.WriteLine("## One session at startup (median of 31 single creations, each after a full GC)");
    Console.WriteLine("| model | float .onnx file (ms) | 4-bit blob (ms) | of which decoding (ms) | blob / file |");
    Console.WriteLine("|---|---:|---:|---:|---:|");
    foreach (var model in new[] { "lenet5.onnx", "mlp.onnx" })
    {
        var run = new SessionBenchmarks { Model = model };
        run.Setup();
        var file = SingleShot(run.FloatOnnxFile);
        var blob = SingleShot(run.QuantizedBlob);
        var decode = SingleShot(run.DecodeOnly);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {model} | {file:0.00} | {blob:0.00} | {decode:0.00} | {blob / file:0.00} |"));
    }
}

if (what is "search" or "all")
{
    SearchBenchmark.Print();
}

if (what is "compensation" or "all")
{
    CompensationBenchmark.Print(layers: !args.Contains("--network-only"), wholeNetwork: !args.Contains("--layers-only"));
}

if (what is "finetune" or "all")
{
    var root = Array.IndexOf(args, "--peer-root") is var r and >= 0 && r + 1 < args.Length ? args[r + 1] : null;
    FinetuneBenchmark.Print(root);
}

if (what is "hessian" or "all")
{
    var root = Array.IndexOf(args, "--peer-root") is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    HessianBenchmark.Print(root);
}

static double SingleShot(Action action)
{
    for (var i = 0; i < 5; i++)
    {
        action();
    }

    var samples = new List<double>();
    for (var i = 0; i < 31; i++)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        action();
        samples.Add(watch.Elapsed.TotalMilliseconds);
    }

    return samples.Order().ElementAt(15);
}

static double Mean(BenchmarkReport report) => report.ResultStatistics?.Mean ?? double.NaN;
