using QuantTasks.Blob;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Engine.Training;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Progress;
using QuantTasks.Quantization;
using QuantTasks.Reporting;
using QuantTasks.Search;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// Fine-tuning (the policy's finetune section; nothing without it): the quantized tensors' shared values and the
/// float tensors are trained on the training file, through the same TorchSharp executor as the analysis. Symbols
/// and masks stay, so the blob's size is the one the search chose; the encode stage holds that to the byte.
/// </summary>
internal sealed class FinetuneStage : PipelineStage
{
    public override string Name => "finetune";

    public override double Share => 0.5;

    public override void Run(ModelJob job, StageContext context)
    {
        job.Training = null;
        job.RefinedModel = null;
        if (job.Policy.Finetune is not { } options)
        {
            return;
        }

        var path = job.Loaded.Resolve(job.Policy.Data.Training!);
        var file = DataFile.Load(path);
        InputChecks.RequireRunnable(job.Model.ToBytes(), file, job.Options.Output, job.ModelPath);
        InputChecks.RequireFinite(file);
        LibTorch.EnsureLoaded(context.Note);
        var device = ComputeDevice.Select(options.Device, "finetune.device", "fine-tuning", context.Note);

        using var graph = TorchGraph.Compile(job.Model, job.Weights, device);
        var output = job.Options.Output ?? graph.OutputNames[0];
        var data = new TrainingData(graph, file, options.Validation, options.Seed, device);
        var objective = TrainingObjective.For(job.Model, output, options, data.HasLabels, path);

        var biases = Biases(job.Model, job.Weights.Select(w => w.Name).ToHashSet(StringComparer.Ordinal))
            .Select(b => new FreeValues(b.Name, b.Dims, b.Values, device, (int)Onnx.Proto.TensorProto.Types.DataType.Float, inCatalog: false))
            .ToArray();
        try
        {
            var tuner = new FineTuner(graph, objective, data, options);
            TrainingReport? aware = null;
            if (options.Mode == FinetuneMode.Qat)
            {
                aware = QuantizationAware(job, context, tuner, biases, device);
            }

            var weights = job.Tensors.Select(t => TrainableTensor.For(t, device)).ToArray();
            try
            {
                var progress = aware is null ? context.Progress : new SynchronousProgress<double>(f => context.Progress.Report(0.5 + (f / 2)));
                var shared = tuner.Run([.. weights, .. biases], Stages(job, options, weights, biases), progress, context.Note, context.Cancellation,
                    "shared", aware?.Epochs[^1].Epoch ?? 0);
                job.Tensors = weights.Select(w => w.ToStored()).ToArray();
                job.Training = aware is null ? shared : shared with
                {
                    Seconds = Math.Round(aware.Seconds + shared.Seconds, 3),
                    Epochs = [.. aware.Epochs, .. shared.Epochs],
                    StoppedEarly = aware.StoppedEarly || shared.StoppedEarly,
                };
            }
            finally
            {
                foreach (var w in weights)
                {
                    w.Dispose();
                }
            }

            if (biases.Length > 0)
            {
                job.RefinedModel = job.Model.WithFloatValues(biases.ToDictionary(b => b.Name, b => b.TrainedValues(), StringComparer.Ordinal));
            }
        }
        finally
        {
            foreach (var b in biases)
            {
                b.Dispose();
            }
        }
    }

    /// <summary>
    /// <c>mode: qat</c>'s first phase: the float weights train quantization-aware on the current grids (biases
    /// with them); then the trained weights are stored on those grids, under the budget checked again.
    /// </summary>
    private static TrainingReport QuantizationAware(ModelJob job, StageContext context, FineTuner tuner, FreeValues[] biases, TorchSharp.torch.Device device)
    {
        var weights = job.Tensors.Select((t, i) => t.Quantized is null
            ? TrainableTensor.For(t, device)
            : new QuantizationAwareWeights(t, job.Values[i], job.Search.Tensors[i].Sparsity > 0, device)).ToArray();
        TrainingReport report;
        StoredTensor[] onGrid;
        try
        {
            report = tuner.Run([.. weights, .. biases], Stages(job, job.Policy.Finetune!, weights, biases),
                new SynchronousProgress<double>(f => context.Progress.Report(f / 2)), context.Note, context.Cancellation, "qat");
            job.Values = weights.Select(w => w switch
            {
                QuantizationAwareWeights q => q.TrainedValues(),
                FreeValues f => f.TrainedValues(),
                _ => throw new InvalidOperationException("Unexpected trainable tensor."),
            }).ToArray();
            onGrid = weights.Select(w => w.ToStored()).ToArray();
        }
        finally
        {
            foreach (var w in weights)
            {
                w.Dispose();
            }
        }

        // The trained weights on the grids they trained on (what the training's forward passes ran), or else
        // quantized again with the search's choices; the symbols are new, so the budget is checked again, and
        // only when neither fits does the search run again on the trained weights.
        var settings = QuantizerSettings.From(job.Policy.Quantization);
        var entropy = job.Policy.Encoding.Entropy == EntropyCoding.Huffman;
        var values = job.Values;
        var requantized = new Lazy<StoredTensor[]>(() => job.Search.Tensors.Select((c, t) => MixedPrecisionSearch.Quantize(c, values[t], settings)).ToArray());
        long payload = 0;
        foreach (var candidate in new[] { new Lazy<StoredTensor[]>(() => onGrid), requantized })
        {
            var choices = job.Search.Tensors.Select((c, t) => c with
            {
                Bytes = candidate.Value[t].Quantized is { } q ? PayloadSize.Of(q, entropy) : PayloadSize.KeptInFloat(values[t].Length),
            }).ToArray();
            payload = choices.Sum(c => c.Bytes);
            if (payload <= job.Search.Budget)
            {
                job.Search = job.Search with { Tensors = choices, PayloadBytes = payload };
                job.Tensors = candidate.Value;
                return report;
            }
        }

        context.Note?.Invoke($"finetune: the trained weights code to {payload:N0} bytes with the same choices, over the budget of {job.Search.Budget:N0}; searching again.");
        var quiet = context with { Progress = new SynchronousProgress<double>(_ => { }) };
        new SearchStage().Run(job, quiet);
        new QuantizeStage().Run(job, quiet);
        return report;
    }

    /// <summary>
    /// Which tensors each stage adds. Joint: all in one. HAWQ: the quantized tensors by falling sensitivity, cut
    /// into <see cref="FinetuneOptions.Stages"/> groups (never more groups than epochs or tensors); the float
    /// tensors train from the first stage, since they cost no bits and absorb what the others cannot.
    /// </summary>
    private static List<IReadOnlyList<TrainableTensor>> Stages(ModelJob job, FinetuneOptions options, TrainableTensor[] weights, FreeValues[] biases)
    {
        var floats = weights.OfType<FreeValues>().Concat<TrainableTensor>(biases).ToList();
        var quantized = weights.Select((w, t) => (Tensor: w, job.Search.Tensors[t].Sensitivity))
            .Where(p => p.Tensor is not FreeValues)
            .ToArray();
        if (options.Order == FinetuneOrder.Joint || quantized.Length == 0)
        {
            return [[.. floats, .. quantized.Select(q => q.Tensor)]];
        }

        var ordered = quantized.OrderByDescending(q => q.Sensitivity).Select(q => q.Tensor).ToArray();
        var count = Math.Max(1, Math.Min(options.Stages, Math.Min(options.Epochs, ordered.Length)));
        var stages = new List<IReadOnlyList<TrainableTensor>>();
        for (var s = 0; s < count; s++)
        {
            var from = s * ordered.Length / count;
            var to = (s + 1) * ordered.Length / count;
            stages.Add(s == 0 ? [.. floats, .. ordered[from..to]] : ordered[from..to]);
        }

        return stages;
    }

    /// <summary>
    /// The float32 biases of the layers whose weights are quantized or kept: input 2 of Conv, ConvTranspose and
    /// Gemm, and a constant added to a MatMul's or Conv's output. Other initializers (normalisation statistics,
    /// shapes, scales of the graph's own arithmetic) stay as exported.
    /// </summary>
    internal static IReadOnlyList<(string Name, long[] Dims, float[] Values)> Biases(OnnxModel model, IReadOnlySet<string> catalog)
    {
        var producers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in model.Graph.Node)
        {
            foreach (var output in node.Output)
            {
                producers[output] = node.OpType;
            }
        }

        var names = new List<string>();
        foreach (var node in model.Graph.Node)
        {
            switch (node.OpType)
            {
                case "Conv" or "ConvTranspose" or "Gemm" when node.Input.Count > 2 && node.Input[2].Length > 0:
                    names.Add(node.Input[2]);
                    break;
                case "Add" when node.Input.Count == 2:
                    for (var i = 0; i < 2; i++)
                    {
                        if (producers.TryGetValue(node.Input[1 - i], out var op) && op is "MatMul" or "Conv")
                        {
                            names.Add(node.Input[i]);
                        }
                    }

                    break;
                default:
                    break;
            }
        }

        var result = new List<(string, long[], float[])>();
        foreach (var name in names.Distinct(StringComparer.Ordinal).Where(n => !catalog.Contains(n)))
        {
            var tensor = model.FindTensor(name);
            if (tensor is null || tensor.DataType != (int)Onnx.Proto.TensorProto.Types.DataType.Float || producers.ContainsKey(name) && !IsConstantNode(model, name))
            {
                continue;
            }

            var values = model.ReadFloats(tensor);
            if (values.All(float.IsFinite))
            {
                result.Add((name, tensor.Dims.ToArray(), values));
            }
        }

        return result;
    }

    private static bool IsConstantNode(OnnxModel model, string name) =>
        model.Graph.Node.Any(n => n.OpType == "Constant" && n.Output.Count == 1 && n.Output[0] == name);
}
