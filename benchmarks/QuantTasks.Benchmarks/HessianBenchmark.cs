using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using QuantTasks.Data;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Hessian;
using QuantTasks.Engine.Native;
using QuantTasks.Policy;
using QuantTasks.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace QuantTasks.Benchmarks;

/// <summary>
/// The Hessian engine on LeNet-5 with 512 calibration digits (batches of 64), all figures from one run:
/// a Hessian-vector product against a forward and backward pass; the trace estimator against the bare loop of the
/// same products; memory against probes and samples; and the whole analysis process against PyTorch computing
/// the same per-tensor traces the way PyHessian does (a process each, startup included).
/// Operations take milliseconds and run native code, so each is timed by a stopwatch as the median of repeats.
/// </summary>
internal static class HessianBenchmark
{
    private const int Samples = 512;
    private const int BatchSize = 64;
    private const string Model = "lenet5.onnx";
    private const string Data = "digits-calibration.npz";

    public static void Print(string? peerRoot)
    {
        LibTorch.EnsureLoaded();
        torch.set_num_threads(Environment.ProcessorCount);
        var model = Workloads.Load(Model);
        var catalog = WeightCatalog.Find(model);
        using var graph = TorchGraph.Compile(model, catalog, CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(Workloads.Fixture(Data)), LossKind.CrossEntropy, Samples, BatchSize, null, CPU);
        var sizes = graph.Parameters.Select(p => p.shape).ToArray();

        Console.WriteLine($"## Hessian engine: {Model}, {Samples} samples, batches of {BatchSize}, {torch.get_num_threads()} threads");
        var forwardBackward = Median(9, () => oracle.LossAndGradientNorm());
        var oneProduct = Median(9, () => oracle.ForEachBatch(batch => batch.Product(Rademacher(sizes))));
        var fourProducts = Median(5, () => oracle.ForEachBatch(batch =>
        {
            for (var k = 0; k < 4; k++)
            {
                batch.Product(Rademacher(sizes));
            }
        }));
        Console.WriteLine("| pass over the 512 samples | ms | / forward+backward |");
        Console.WriteLine("|---|---:|---:|");
        Row("forward + backward (gradient)", forwardBackward, forwardBackward);
        Row("Hessian-vector product, graph built for it", oneProduct, forwardBackward);
        Row("Hessian-vector product, 4 per graph (per product)", fourProducts / 4, forwardBackward);

        // The estimator does exactly this loop, plus its bookkeeping: vectors from the seeded generator, the
        // per-tensor dot products, the diagonal and the stopping rule.
        const int probes = 64;
        var bare = Median(3, () =>
        {
            for (var pass = 0; pass < probes / 4; pass++)
            {
                oracle.ForEachBatch(batch =>
                {
                    for (var k = 0; k < 4; k++)
                    {
                        batch.Product(Rademacher(sizes));
                    }
                });
            }
        });
        var estimator = Median(3, () => HessianEstimators.TraceAndDiagonal(oracle, probes, 1e-12, 0, null));
        Console.WriteLine();
        Console.WriteLine($"| {probes} probes | ms | / bare loop |");
        Console.WriteLine("|---|---:|---:|");
        Row("bare loop of Hessian-vector products", bare, bare);
        Row("trace and diagonal estimator", estimator, bare);

        Console.WriteLine();
        Console.WriteLine("## Whole analysis, one process each (startup, model and data loading included)");
        const int peerProbes = 100;
        var ours = RunSelf(peerProbes, Samples);
        Console.WriteLine("| run | probes | samples | wall s | peak RSS MB |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| QuantTasks analyze --method trace | {peerProbes} | {Samples} | {ours.Seconds:0.00} | {ours.PeakMegabytes:0} |"));
        foreach (var (p, s) in new[] { (16, Samples), (16, 128) })
        {
            var run = RunSelf(p, s);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| QuantTasks analyze --method trace | {p} | {s} | {run.Seconds:0.00} | {run.PeakMegabytes:0} |"));
        }

        var peer = RunPeer(peerRoot, peerProbes);
        if (peer is null)
        {
            Console.WriteLine("PyTorch peer skipped: pass a root with python3-torch (benchmark hessian --peer-root /opt/trixie) or put it on PATH.");
            return;
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| PyTorch, PyHessian's method (loop alone {peer.Value.LoopSeconds:0.00} s) | {peerProbes} | {Samples} | {peer.Value.Seconds:0.00} | |"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"QuantTasks / PyTorch wall time: {ours.Seconds / peer.Value.Seconds:0.00}"));
        var worst = peer.Value.Traces.Max(p => Math.Abs(ours.Traces[p.Key] - p.Value) / Math.Abs(p.Value));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Largest relative difference between the two runs' traces (different probes): {worst:P1}"));
    }

    /// <summary>Child-process entry: one analysis, then its JSON and peak resident memory on standard output.</summary>
    public static void RunOnce(int probes, int samples)
    {
        var report = SensitivityAnalysis.Run(Workloads.Fixture(Model), Workloads.Fixture(Data),
            new AnalysisOptions(AnalysisMethod.Trace, LossKind.CrossEntropy, samples, BatchSize, probes, 1e-12));
        var peak = File.ReadAllLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        var kilobytes = long.Parse(peak.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["peak_kb"] = kilobytes,
            ["traces"] = report.Tensors.ToDictionary(t => t.Name, t => t.Trace!.Value),
        }));
    }

    private static (double Seconds, double PeakMegabytes, Dictionary<string, double> Traces) RunSelf(int probes, int samples)
    {
        var assembly = typeof(HessianBenchmark).Assembly.Location;
        // Through the dotnet host: under `dotnet run` this process is the app host, which takes no assembly path.
        var host = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var (seconds, output) = Run(host, $"\"{assembly}\" hessian-once {probes} {samples}");
        using var json = JsonDocument.Parse(output);
        var traces = json.RootElement.GetProperty("traces").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
        return (seconds, json.RootElement.GetProperty("peak_kb").GetInt64() / 1024.0, traces);
    }

    private static (double Seconds, double LoopSeconds, Dictionary<string, double> Traces)? RunPeer(string? root, int probes)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "peer", "pyhessian_trace.py");
        string file, arguments;
        if (root is not null)
        {
            // The fixtures and scripts go inside the root, so the peer reads the same bytes.
            var inside = Path.Combine(root, "tmp", "quanttasks-peer");
            Directory.CreateDirectory(inside);
            foreach (var source in new[] { script, Path.Combine(AppContext.BaseDirectory, "peer", "make_fixtures.py"), Workloads.Fixture(Model), Workloads.Fixture(Data) })
            {
                File.Copy(source, Path.Combine(inside, Path.GetFileName(source)), overwrite: true);
            }

            file = "chroot";
            arguments = $"{root} python3 /tmp/quanttasks-peer/pyhessian_trace.py /tmp/quanttasks-peer/{Model} lenet5 /tmp/quanttasks-peer/{Data} {Samples} {BatchSize} {probes}";
        }
        else
        {
            var check = Process.Start(new ProcessStartInfo("python3", "-c \"import torch, onnx\"") { RedirectStandardError = true, RedirectStandardOutput = true });
            check?.WaitForExit();
            if (check is null || check.ExitCode != 0)
            {
                return null;
            }

            file = "python3";
            arguments = $"\"{script}\" \"{Workloads.Fixture(Model)}\" lenet5 \"{Workloads.Fixture(Data)}\" {Samples} {BatchSize} {probes}";
        }

        var (seconds, output) = Run(file, arguments);
        using var json = JsonDocument.Parse(output.Trim().Split('\n')[^1]);
        var traces = json.RootElement.GetProperty("traces").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
        return (seconds, json.RootElement.GetProperty("seconds_in_loop").GetDouble(), traces);
    }

    private static (double Seconds, string Output) Run(string file, string arguments)
    {
        var watch = Stopwatch.StartNew();
        using var process = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = process.StandardOutput.ReadToEnd();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        var seconds = watch.Elapsed.TotalSeconds;
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {arguments} failed ({process.ExitCode}): {error}");
        }

        return (seconds, output);
    }

    private static List<Tensor> Rademacher(long[][] sizes) =>
        sizes.Select(s => (torch.randint(0, 2, s, ScalarType.Float32) * 2) - 1).ToList();

    private static double Median(int repeats, Action action)
    {
        action();
        var samples = new List<double>();
        for (var i = 0; i < repeats; i++)
        {
            using var scope = NewDisposeScope();
            var watch = Stopwatch.StartNew();
            action();
            samples.Add(watch.Elapsed.TotalMilliseconds);
        }

        return samples.Order().ElementAt(repeats / 2);
    }

    private static void Row(string what, double ms, double baseline) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {what} | {ms:0.0} | {ms / baseline:0.00} |"));
}
