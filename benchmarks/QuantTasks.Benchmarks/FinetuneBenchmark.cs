using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using QuantTasks.Blob;
using QuantTasks.Data;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Engine.Pipeline.Stages;
using QuantTasks.Engine.Training;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace QuantTasks.Benchmarks;

/// <summary>
/// Fine-tuning's seconds per epoch against PyTorch doing the same work in the same run: LeNet-5, every weight a
/// per-tensor 16-level codebook at its quantiles (rebuilt by a gather each step), biases free, 0.5 cross-entropy
/// + 0.5 distillation at T = 2 against precomputed teacher logits, Adam at 1e-3, batches of 64, the 8,000
/// training digits, the same thread count. The teacher pass is outside both timings. Goal: at most 1.5x.
/// </summary>
internal static class FinetuneBenchmark
{
    private const string Model = "lenet5.onnx";
    private const string Data = "digits-training.npz";
    private const int Epochs = 3;
    private const int BatchSize = 64;

    public static void Print(string? peerRoot)
    {
        LibTorch.EnsureLoaded();
        var threads = Environment.ProcessorCount;
        torch.set_num_threads(threads);
        var model = Workloads.Load(Model);
        var catalog = WeightCatalog.Find(model);
        using var graph = TorchGraph.Compile(model, catalog, CPU);
        var options = new FinetuneOptions
        {
            Epochs = Epochs, BatchSize = BatchSize, Validation = 0, Patience = 0, Loss = FinetuneLoss.Mixed,
            Schedule = LearningRateSchedule.Constant,
        };
        var file = DataFile.Load(Workloads.Fixture(Data));
        var data = new TrainingData(graph, file, options.Validation, 0, CPU);
        var objective = TrainingObjective.For(model, graph.OutputNames[0], options, data.HasLabels, file.Path);
        var tensors = catalog.Select(w => TrainableTensor.For(Codebook(w, model.ReadFloats(model.FindTensor(w.Name)!)), CPU))
            .Concat(FinetuneStage.Biases(model, catalog.Select(w => w.Name).ToHashSet(StringComparer.Ordinal))
                .Select(b => (TrainableTensor)new FreeValues(b.Name, b.Dims, b.Values, CPU, 1, inCatalog: false)))
            .ToArray();
        var tuner = new FineTuner(graph, objective, data, options);
        var clock = Stopwatch.StartNew();
        var report = tuner.Run(tensors, [tensors], null, null, CancellationToken.None);
        var ours = clock.Elapsed.TotalSeconds / Epochs;

        Console.WriteLine($"## Fine-tuning: {Model}, {data.Training.Length} samples, batches of {BatchSize}, Adam, {threads} threads, {Epochs} epochs");
        Console.WriteLine("| run | s per epoch | / PyTorch |");
        Console.WriteLine("|---|---:|---:|");
        var peer = RunPeer(peerRoot, threads);
        var peerSeconds = peer?.Order().ElementAt(peer.Length / 2);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| QuantTasks finetune stage (shared levels) | {ours:0.000} | {(peerSeconds is { } p ? (ours / p).ToString("0.00", CultureInfo.InvariantCulture) : "-")} |"));
        if (peerSeconds is { } peerEpoch)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| PyTorch, the same shared-level training (median epoch) | {peerEpoch:0.000} | 1.00 |"));
        }
        else
        {
            Console.WriteLine("PyTorch peer skipped: pass a root with python3-torch (benchmark finetune --peer-root /opt/trixie) or put it on PATH.");
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Final training loss: QuantTasks {report.Epochs[^1].TrainingLoss:0.0000}."));
        foreach (var t in tensors)
        {
            t.Dispose();
        }
    }

    // A per-tensor codebook of 16 levels at the quantiles of the values, each weight at its nearest level.
    private static StoredTensor Codebook(WeightTensor weight, float[] values)
    {
        var sorted = values.Order().ToArray();
        var levels = Enumerable.Range(0, 16).Select(k => sorted[(int)((k + 0.5) / 16 * sorted.Length)]).ToArray();
        var symbols = values.Select(v => (byte)Enumerable.Range(0, 16).MinBy(k => Math.Abs(levels[k] - v))).ToArray();
        return StoredTensor.Of(QuantizedTensor.Codebook(weight.Name, weight.Shape.ToArray(), 4, -1, levels, symbols, "kmeans"), weight.DataType);
    }

    private static double[]? RunPeer(string? root, int threads)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "peer", "finetune_epoch.py");
        string file, arguments;
        if (root is not null)
        {
            var inside = Path.Combine(root, "tmp", "quanttasks-peer");
            Directory.CreateDirectory(inside);
            foreach (var source in new[] { script, Workloads.Fixture(Model), Workloads.Fixture(Data) })
            {
                File.Copy(source, Path.Combine(inside, Path.GetFileName(source)), overwrite: true);
            }

            file = "chroot";
            arguments = $"{root} python3 /tmp/quanttasks-peer/finetune_epoch.py /tmp/quanttasks-peer/{Model} /tmp/quanttasks-peer/{Data} {Epochs} {BatchSize} {threads}";
        }
        else
        {
            file = "python3";
            arguments = $"\"{script}\" \"{Workloads.Fixture(Model)}\" \"{Workloads.Fixture(Data)}\" {Epochs} {BatchSize} {threads}";
        }

        try
        {
            using var process = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                return null;
            }

            using var json = JsonDocument.Parse(output.Trim().Split('\n')[^1]);
            return json.RootElement.GetProperty("seconds_per_epoch").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or JsonException)
        {
            return null;
        }
    }
}
