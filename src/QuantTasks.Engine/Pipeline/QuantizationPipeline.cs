using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using System.Text.Json;
using QuantTasks.Blob;
using QuantTasks.Caching;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Native;
using QuantTasks.Engine.Pipeline.Stages;
using QuantTasks.Policy;
using QuantTasks.Progress;
using QuantTasks.Quantization;
using QuantTasks.Reporting;

namespace QuantTasks.Engine.Pipeline;

/// <summary>A stage starting, for progress display.</summary>
/// <param name="Model">The model's name.</param>
/// <param name="Stage">The running stage's name (see <see cref="QuantizationPipeline.Stages"/>), then done.</param>
/// <param name="Fraction">How far the model's pipeline is, 0 to 1.</param>
internal sealed record PipelineProgress(string Model, string Stage, double Fraction);

/// <summary>Where the pipeline writes, and what it names the generated code after.</summary>
/// <param name="OutputDirectory">Blob, generated C#, report.json and report.md go here.</param>
/// <param name="RootNamespace">The consuming project's root namespace; generated classes go in <c>{root}.Models</c> unless the policy names a namespace.</param>
/// <param name="Cache">The content-hash cache to consult and fill (a local folder, or tiers of caches); null to always compute.</param>
internal sealed record PipelineOptions(string OutputDirectory, string RootNamespace, ResultCache? Cache = null);

/// <summary>What a run produced: every model's artifacts, the report, and the accuracy gate's verdicts.</summary>
/// <param name="Models">Per model.</param>
/// <param name="Report">The report written to report.json and report.md.</param>
/// <param name="GateFailures">One error per model that lost more accuracy than allowed; empty when all passed.</param>
internal sealed record PipelineResult(IReadOnlyList<ModelArtifacts> Models, QuantizationReport Report, IReadOnlyList<QuantException> GateFailures)
{
    /// <summary>Throws the gate's errors (exit code 2), if any.</summary>
    public void ThrowIfGateFailed()
    {
        if (GateFailures.Count > 0)
        {
            throw QuantException.Combine(GateFailures);
        }
    }
}

/// <summary>What the pipeline wrote for one model.</summary>
/// <param name="Report">The model's report entry.</param>
/// <param name="BlobPath">The blob file.</param>
/// <param name="CodePath">The generated C# file.</param>
/// <param name="Namespace">The generated class's namespace (the blob's resource name starts with it).</param>
/// <param name="Inputs">Every file the result depends on: the model, its external data, the data files.</param>
internal sealed record ModelArtifacts(ModelReport Report, string BlobPath, string CodePath, string Namespace, IReadOnlyList<string> Inputs);

/// <summary>
/// The whole job for a policy, one model at a time, as a list of stages over one <see cref="ModelJob"/>:
/// <code>
///   load -> plan -> analyze -> activations -> search -> quantize -> joint-check -> finetune -> [refine...] -> encode -> evaluate -> report -> generate
/// </code>
/// A cache hit at load ends a model's job there. Outputs are written only when every model has succeeded, and
/// the accuracy gate is applied after they are, so that CI can publish the report of a failed gate.
/// </summary>
internal sealed class QuantizationPipeline
{
    /// <summary>The tool version stamped into blobs, generated code and content hashes.</summary>
    public static readonly string ToolVersion =
        typeof(QuantizationPipeline).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>The report files written beside the blobs, whether or not the accuracy gate passed.</summary>
    public static IReadOnlyList<string> ReportFiles { get; } = ["report.json", "report.md", "report.svg"];

    private readonly IProgress<PipelineProgress>? _progress;
    private readonly Action<string>? _note;
    private readonly IReadOnlyList<PipelineStage> _stages;
    private readonly QuantizerRegistry _quantizers;

    /// <summary>Creates the pipeline; <paramref name="progress"/> hears of each stage, <paramref name="note"/> of remarks for people.</summary>
    /// <param name="progress">Stage and fraction per model.</param>
    /// <param name="note">Remarks for people.</param>
    /// <param name="stages">The stages, in order; <see cref="DefaultStages"/> when null.</param>
    /// <param name="quantizers">The quantization methods; <see cref="QuantizerRegistry.Default"/> when null.</param>
    public QuantizationPipeline(IProgress<PipelineProgress>? progress = null, Action<string>? note = null,
        IReadOnlyList<PipelineStage>? stages = null, QuantizerRegistry? quantizers = null)
    {
        _progress = progress;
        _note = note;
        _stages = stages ?? DefaultStages();
        _quantizers = quantizers ?? QuantizerRegistry.Default;
        if (_stages.Count == 0 || _stages[0] is not LoadStage)
        {
            throw new ArgumentException("The first stage must be the load stage, which reads the model and asks the cache.", nameof(stages));
        }
    }

    /// <summary>
    /// The product's stages. Fine-tuning (a no-op without the policy's finetune section) and <paramref name="refine"/>
    /// go between quantize and encode: stages that change weight values, codebook levels or float tensors, never
    /// symbols or masks.
    /// </summary>
    public static IReadOnlyList<PipelineStage> DefaultStages(params PipelineStage[] refine) =>
    [
        new LoadStage(), new PlanStage(), new AnalyzeStage(), new ActivationsStage(), new SearchStage(), new QuantizeStage(), new JointCheckStage(), new FinetuneStage(),
        .. refine,
        new EncodeStage(), new EvaluateStage(), new ReportStage(), new GenerateStage(),
    ];

    /// <summary>The stages this pipeline runs, in order.</summary>
    public IReadOnlyList<PipelineStage> Stages => _stages;

    /// <summary>
    /// Runs every model of the policy and writes the outputs. The accuracy gate's verdict is in the result; call
    /// <see cref="PipelineResult.ThrowIfGateFailed"/> after publishing the report.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> fired; nothing was written.</exception>
    public PipelineResult Run(LoadedPolicy loaded, PipelineOptions options, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(loaded);
        ArgumentNullException.ThrowIfNull(options);

        // Nothing is written until every model has been computed: a run that fails half-way leaves the output
        // folder as it was, never a blob without its loader or a loader for a model the gate never judged.
        var jobs = loaded.Policy.Models.Select(m => RunModel(new ModelJob(loaded, m, options, _quantizers), cancellation)).ToArray();
        cancellation.ThrowIfCancellationRequested();
        try
        {
            Directory.CreateDirectory(options.OutputDirectory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QuantException(ErrorCode.FileAccess, $"Cannot create the output folder '{options.OutputDirectory}': {e.Message}",
                new SourceLocation(options.OutputDirectory), e);
        }

        foreach (var job in jobs)
        {
            AtomicFile.WriteIfChanged(job.BlobPath, job.Blob.Bytes);
            AtomicFile.WriteIfChanged(job.CodePath, job.Code);
        }

        var artifacts = jobs.Select(j => new ModelArtifacts(j.Report, j.BlobPath, j.CodePath, j.Namespace, j.Inputs)).ToArray();
        var report = new QuantizationReport(artifacts.Select(a => a.Report).ToArray());
        AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "report.json"), report.ToJson());
        AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "report.md"), report.ToMarkdown());
        AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "report.svg"), ReportChart.ToSvg(report));

        var failures = artifacts
            .Where(a => a.Report.Accuracy is { Passed: false })
            .Select(a => GateFailure(loaded, a.Report))
            .ToArray();
        return new PipelineResult(artifacts, report, failures);
    }

    /// <summary>Runs the stages over one model's job, timing each, and fills or reads the cache.</summary>
    private ModelJob RunModel(ModelJob job, CancellationToken cancellation)
    {
        try
        {
            return RunStages(job, cancellation);
        }
        finally
        {
            job.ReleaseWorkingState();
        }
    }

    private ModelJob RunStages(ModelJob job, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var seconds = new Dictionary<string, double>(StringComparer.Ordinal);
        var total = _stages.Sum(s => s.Share);
        var done = 0.0;
        foreach (var stage in _stages)
        {
            cancellation.ThrowIfCancellationRequested();
            var start = done / total;
            var share = stage.Share / total;
            var name = stage.Name;
            _progress?.Report(new PipelineProgress(job.Name, name, start));
            var stageClock = Stopwatch.StartNew();
            stage.Run(job, new StageContext(
                new SynchronousProgress<double>(f => _progress?.Report(new PipelineProgress(job.Name, name, start + (share * Math.Clamp(f, 0, 1))))),
                _note,
                cancellation));
            seconds[name] = Math.Round(seconds.GetValueOrDefault(name) + stageClock.Elapsed.TotalSeconds, 3);
            ReleaseStageMemory();
            done += stage.Share;
            if (job.Cached is { } cached)
            {
                return FromCache(job, cached, clock, seconds);
            }
        }

        _progress?.Report(new PipelineProgress(job.Name, "done", 1));
        job.Report = job.Report with { Seconds = Math.Round(clock.Elapsed.TotalSeconds, 3), Stages = seconds };
        job.Pipeline.Cache?.Put(job.Key, new CachedResult(job.Name, job.Blob.Bytes, job.Code, JsonSerializer.Serialize(job.Report, QuantizationReport.JsonOptions)), _note, cancellation);
        return job;
    }

    /// <summary>
    /// What a stage worked with is garbage once it ends (factorisations, candidates, ONNX Runtime's activations),
    /// and neither heap knows: the collector keeps the freed regions committed and glibc its arenas. Returning both
    /// here keeps one stage's leftovers out of the next one's peak (ResNet-18's joint check: 1.87 GB resident with
    /// a 0.95 GB managed heap). Measured: the collections of all stages together took at most 0.3 s of ResNet-50's
    /// 646 s run (the run's total less its stages' sum), so running them after every stage needs no special case.
    /// </summary>
    private static void ReleaseStageMemory()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        NativeHeap.ReturnFreePages();
    }

    private ModelJob FromCache(ModelJob job, CachedResult cached, Stopwatch clock, Dictionary<string, double> seconds)
    {
        _progress?.Report(new PipelineProgress(job.Name, "cache hit", 0.9));
        job.Blob = new BlobResult(cached.Blob, 0, new Dictionary<string, long>(), new Dictionary<string, string>());
        job.Code = cached.Code;
        job.Report = JsonSerializer.Deserialize<ModelReport>(cached.Report, QuantizationReport.JsonOptions)! with
        {
            Source = job.ModelPath,
            Blob = job.BlobPath,
            Seconds = Math.Round(clock.Elapsed.TotalSeconds, 3),
            CacheHit = true,
            Stages = seconds,
        };
        _progress?.Report(new PipelineProgress(job.Name, "done", 1));
        return job;
    }

    private static QuantException GateFailure(LoadedPolicy loaded, ModelReport report)
    {
        var a = report.Accuracy!;
        return new QuantException(ErrorCode.AccuracyGateFailed,
            string.Create(CultureInfo.InvariantCulture,
                $"Model {report.Name} lost {a.Drop:0.00} pp of {a.Metric} ({a.Baseline:0.00}% float, {a.Quantized:0.00}% quantized, {a.Samples} samples); the policy allows {a.MaxDrop:0.00} pp. Raise the budget, keep sensitive tensors at more bits with quantization.overrides, or allow more with accuracy.max_drop."),
            loaded.Locate("/accuracy/max_drop"));
    }
}
