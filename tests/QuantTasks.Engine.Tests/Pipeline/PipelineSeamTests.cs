using QuantTasks.Blob;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Pipeline;
using QuantTasks.Engine.Pipeline.Stages;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Runtime;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Pipeline;

/// <summary>
/// The seams the next features use, exercised without editing the pipeline: a refine stage that rewrites levels,
/// a quantizer that is not the product's, stages and quantizers run alone.
/// </summary>
public sealed class PipelineSeamTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public PipelineSeamTests()
    {
        _folder.Copy(Fixtures.Model("mlp.onnx"));
        _folder.Copy(Fixtures.Data("digits-test.npz"), "test.npz");
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void A_refine_stage_between_quantize_and_encode_changes_levels_and_keeps_the_sizes()
    {
        var stages = QuantizationPipeline.DefaultStages(new HalvingRefineStage());
        var plain = new QuantizationPipeline().Run(Policy(QuantizationMethods.Kmeans), Options("plain"));

        var refined = new QuantizationPipeline(stages: stages).Run(Policy(QuantizationMethods.Kmeans), Options("refined"));

        Assert.Equal(["load", "plan", "analyze", "activations", "search", "quantize", "joint-check", "finetune", "halve", "encode", "evaluate", "report", "generate"],
            stages.Select(s => s.Name));
        var before = QuantBlob.Read(File.ReadAllBytes(plain.Models[0].BlobPath));
        var after = QuantBlob.Read(File.ReadAllBytes(refined.Models[0].BlobPath));
        Assert.Equal(before.PayloadLength, after.PayloadLength);
        var name = before.Tensors.First(t => t.Bits > 0).Name;
        var original = before.DecodeFloats(name);
        var halved = after.DecodeFloats(name);
        Assert.All(original.Zip(halved), p => Assert.Equal(p.First / 2, p.Second));
        Assert.Contains("halve", refined.Models[0].Report.Stages!.Keys);
        Assert.True(refined.Models[0].Report.Accuracy!.Quantized < plain.Models[0].Report.Accuracy!.Quantized);
    }

    [Fact]
    public void A_quantizer_added_to_the_registry_runs_without_touching_the_pipeline()
    {
        var quantizers = QuantizerRegistry.Default.With(new SignQuantizer());

        var result = new QuantizationPipeline(quantizers: quantizers).Run(Policy("sign"), Options("sign"));

        var model = result.Models[0].Report;
        Assert.All(model.Tensors.Where(t => t.Bits < 32), t => Assert.Equal("sign", t.Method));
        var blob = QuantBlob.Read(File.ReadAllBytes(result.Models[0].BlobPath));
        var values = blob.DecodeFloats("fc1.weight");
        Assert.Equal(2, values.Distinct().Count());
        Assert.Equal(values.Max(), -values.Min(), 6);
    }

    [Fact]
    public void A_method_without_an_implementation_is_an_error_not_another_method()
    {
        var error = Assert.Throws<QuantException>(() => new QuantizationPipeline().Run(Policy("sign"), Options("missing")));

        Assert.Equal(ErrorCode.PolicyInvalidValue, error.Code);
        Assert.Contains("'sign' has no implementation", error.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_folder.File("missing")));
    }

    [Fact]
    public void The_plan_stage_runs_alone_on_a_job()
    {
        var loaded = Policy(QuantizationMethods.Ecsq);
        var job = new ModelJob(loaded, loaded.Policy.Models[0], Options("alone"), QuantizerRegistry.Default);
        var context = new StageContext(new Progress.SynchronousProgress<double>(_ => { }), null, CancellationToken.None);
        new LoadStage().Run(job, context);

        new PlanStage().Run(job, context);

        Assert.Equal(["fc1.weight", "fc2.weight", "fc3.weight"], job.Plans.Select(p => p.Weight.Name));
        Assert.All(job.Plans, p => Assert.IsType<EcsqMethod>(p.Quantizer));
        Assert.All(job.Plans, p => Assert.Equal([2], p.Bits));
    }

    [Fact]
    public void A_quantizer_runs_alone_on_a_prepared_tensor()
    {
        var values = Enumerable.Range(0, 64).Select(i => (float)Math.Sin(i)).ToArray();
        var prepared = PreparedTensor.Create("w", values, [4, 16], channelAxis: 0);

        var quantized = new UniformMethod().Quantize(prepared, 3, new QuantizerSettings());

        Assert.Equal(64, quantized.Symbols.Length);
        Assert.All(quantized.Symbols, s => Assert.InRange(s, 0, 7));
        Assert.True(TensorQuantizer.SquaredError(quantized, values) < 0.05 * values.Sum(v => v * v));
    }

    [Fact]
    public void A_cancelled_run_stops_before_writing()
    {
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();

        Assert.ThrowsAny<OperationCanceledException>(() => new QuantizationPipeline().Run(Policy(QuantizationMethods.Uniform), Options("cancelled"), cancel.Token));

        Assert.False(Directory.Exists(_folder.File("cancelled")));
    }

    private LoadedPolicy Policy(string method, params string[] names) =>
        new(_folder.File("quant.yaml"), new QuantPolicy
        {
            Models = (names.Length == 0 ? ["Digits"] : names).Select(n => new ModelOptions { Path = "mlp.onnx", Name = n }).ToArray(),
            Data = new DataOptions { Evaluation = "test.npz" },
            Sensitivity = new SensitivityOptions { Method = SensitivityMethod.None },
            Quantization = new QuantizationOptions { Method = method, Bits = [2], Omega = OmegaKind.Sensitivity, Compensation = CompensationKind.None, Budget = new BudgetOptions { AverageBits = 3 } },
            Accuracy = new AccuracyOptions { MaxDrop = 100 },
        });

    private PipelineOptions Options(string output) => new(_folder.File(output), "Seams");

    /// <summary>
    /// Outputs are written once every model is done, yet a finished model's working state (values, model, search,
    /// stored tensors) must not stay reachable while the next one runs: a policy of several large models would hold
    /// them all at once. A refine stage notes the first model's values and, in the second model's run, collects.
    /// </summary>
    [Fact]
    public void A_finished_models_working_state_is_not_held_while_the_next_model_runs()
    {
        var loaded = Policy(QuantizationMethods.Kmeans, "First", "Second");
        var watch = new WatchingStage();

        var result = new QuantizationPipeline(stages: QuantizationPipeline.DefaultStages(watch)).Run(loaded, Options("two"));

        Assert.Equal(2, result.Models.Count);
        Assert.All(result.Models, m => Assert.True(File.Exists(m.BlobPath)));
        Assert.Equal(2, watch.Runs);
        Assert.False(watch.FirstStillAlive, "the first model's values were still reachable during the second model's run");
    }

    /// <summary>Halves every level: a stand-in for fine-tuning, which changes levels and never symbols.</summary>
    private sealed class HalvingRefineStage : PipelineStage
    {
        public override string Name => "halve";

        public override void Run(ModelJob job, StageContext context) =>
            job.Tensors = job.Tensors.Select(t => t.Quantized is { } q
                ? StoredTensor.Of(q.WithParameters(q.Parameters.Select(v => v / 2).ToArray()), t.ElementType)
                : t).ToArray();
    }

    /// <summary>Records the first job's values weakly; in the next job, whether they are still alive after a full collection.</summary>
    private sealed class WatchingStage : PipelineStage
    {
        private WeakReference<float[][]>? _first;

        public override string Name => "watch";

        public int Runs { get; private set; }

        public bool FirstStillAlive { get; private set; }

        public override void Run(ModelJob job, StageContext context)
        {
            Runs++;
            if (_first is null)
            {
                _first = new WeakReference<float[][]>(job.Values);
                return;
            }

            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            GC.Collect();
            FirstStillAlive = _first.TryGetTarget(out _);
        }
    }

    /// <summary>One bit per weight: the sign, scaled by the mean magnitude (BinaryConnect's reconstruction).</summary>
    private sealed class SignQuantizer : Quantizer
    {
        public override string Name => "sign";

        public override QuantizedTensor Quantize(PreparedTensor tensor, int bits, QuantizerSettings settings)
        {
            var values = tensor.PrunedValues();
            var scale = values.Length == 0 ? 0 : (float)values.Average(v => Math.Abs(v));
            var symbols = values.Select(v => (byte)(v < 0 ? 0 : 1)).ToArray();
            return QuantizedTensor.Codebook(tensor.Name, [.. tensor.Dims], 1, -1, [-scale, scale], symbols, Name);
        }
    }
}
