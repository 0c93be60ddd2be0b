using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using QuantTasks.Blob;
using QuantTasks.Caching;
using QuantTasks.CodeGeneration;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Hessian;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Progress;
using QuantTasks.Quantization;
using QuantTasks.Reporting;
using QuantTasks.Runtime;
using QuantTasks.Search;
using QuantTasks.Weights;

namespace QuantTasks.Engine.Pipeline;

/// <summary>A stage starting, for progress display.</summary>
/// <param name="Model">The model's name.</param>
/// <param name="Stage">What is going on: load, analyze, search, encode, evaluate, generate, done.</param>
/// <param name="Fraction">How far the model's pipeline is, 0 to 1.</param>
public sealed record PipelineProgress(string Model, string Stage, double Fraction);

/// <summary>Where the pipeline writes, and what it names the generated code after.</summary>
/// <param name="OutputDirectory">Blob, generated C#, report.json and report.md go here.</param>
/// <param name="RootNamespace">The consuming project's root namespace; generated classes go in <c>{root}.Models</c> unless the policy names a namespace.</param>
/// <param name="Cache">The content-hash cache to consult and fill; null to always compute.</param>
public sealed record PipelineOptions(string OutputDirectory, string RootNamespace, ContentCache? Cache = null);

/// <summary>What a run produced: every model's artifacts, the report, and the accuracy gate's verdicts.</summary>
/// <param name="Models">Per model.</param>
/// <param name="Report">The report written to report.json and report.md.</param>
/// <param name="GateFailures">One error per model that lost more accuracy than allowed; empty when all passed.</param>
public sealed record PipelineResult(IReadOnlyList<ModelArtifacts> Models, QuantizationReport Report, IReadOnlyList<QuantException> GateFailures)
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
public sealed record ModelArtifacts(ModelReport Report, string BlobPath, string CodePath, string Namespace, IReadOnlyList<string> Inputs);

/// <summary>
/// The whole job for a policy, one model at a time: load the model and its weight catalog, measure each tensor's
/// Hessian sensitivity, search bits and quantize under the budget, encode the blob, evaluate the decoded blob against the float model, generate the loader,
/// report. Each stage hands a plain value to the next; the accuracy gate is applied after everything is written
/// so that CI can publish the report of a failed build.
/// </summary>
public sealed class QuantizationPipeline
{
    /// <summary>The tool version stamped into blobs, generated code and content hashes.</summary>
    public static readonly string ToolVersion =
        typeof(QuantizationPipeline).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>The report files written beside the blobs, whether or not the accuracy gate passed.</summary>
    public static IReadOnlyList<string> ReportFiles { get; } = ["report.json", "report.md", "report.svg"];

    private readonly IProgress<PipelineProgress>? _progress;
    private readonly Lock _stageGate = new();
    private readonly Stopwatch _stageClock = new();
    private string? _stage;
    private Dictionary<string, double> _stageSeconds = new(StringComparer.Ordinal);
    private readonly Action<string>? _note;

    /// <summary>Creates the pipeline; <paramref name="progress"/> hears of each stage, <paramref name="note"/> of remarks for people.</summary>
    public QuantizationPipeline(IProgress<PipelineProgress>? progress = null, Action<string>? note = null)
    {
        _progress = progress;
        _note = note;
    }

    /// <summary>
    /// Runs every model of the policy and writes the outputs. The accuracy gate's verdict is in the result; call
    /// <see cref="PipelineResult.ThrowIfGateFailed"/> after publishing the report.
    /// </summary>
    public PipelineResult Run(LoadedPolicy loaded, PipelineOptions options)
    {
        ArgumentNullException.ThrowIfNull(loaded);
        ArgumentNullException.ThrowIfNull(options);
        // Nothing is written until every model has been computed: a run that fails half-way leaves the output
        // folder as it was, never a blob without its loader or a loader for a model the gate never judged.
        var results = loaded.Policy.Models.Select(m => RunModel(loaded, m, options)).ToArray();
        try
        {
            Directory.CreateDirectory(options.OutputDirectory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QuantException(ErrorCode.FileAccess, $"Cannot create the output folder '{options.OutputDirectory}': {e.Message}",
                new SourceLocation(options.OutputDirectory), e);
        }

        foreach (var (model, blob, code) in results)
        {
            AtomicFile.WriteIfChanged(model.BlobPath, blob);
            AtomicFile.WriteIfChanged(model.CodePath, code);
        }

        var artifacts = results.Select(r => r.Artifacts).ToArray();
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

    private (ModelArtifacts Artifacts, byte[] Blob, string Code) RunModel(LoadedPolicy loaded, ModelOptions modelOptions, PipelineOptions options)
    {
        var clock = Stopwatch.StartNew();
        StartStages();
        var policy = loaded.Policy;
        var name = PolicyLoader.ModelName(modelOptions);
        var modelPath = loaded.Resolve(modelOptions.Path);
        Report(name, "load", 0);
        var model = OnnxModel.Load(modelPath);
        var @namespace = modelOptions.Namespace ?? options.RootNamespace + ".Models";
        var inputs = InputFiles(loaded, model);
        var hash = Hash(loaded, modelOptions, model, @namespace);
        var key = Convert.ToHexStringLower(hash);
        var blobPath = Path.Combine(options.OutputDirectory, LoaderGenerator.BlobFileName(name));
        var codePath = Path.Combine(options.OutputDirectory, LoaderGenerator.ClassName(name) + ".g.cs");
        if (options.Cache?.TryGet(key, _note) is { } cached)
        {
            Report(name, "cache hit", 0.9);
            var fromCache = JsonSerializer.Deserialize<ModelReport>(cached.Report, QuantizationReport.JsonOptions)! with
            {
                Source = modelPath,
                Blob = blobPath,
                Seconds = Math.Round(clock.Elapsed.TotalSeconds, 3),
                CacheHit = true,
            };
            Report(name, "done", 1);
            fromCache = fromCache with { Stages = StageSeconds() };
            return (new ModelArtifacts(fromCache, blobPath, codePath, @namespace, inputs), cached.Blob, cached.Code);
        }

        // ONNX Runtime judges the graph first (and runs it on a calibration sample): no graph it rejects, and no
        // shape that does not fit, may reach the Hessian engine, where libtorch would abort the process.
        var calibrationData = policy.Data.Calibration is { } calibrationFile ? DataFile.Load(loaded.Resolve(calibrationFile)) : null;
        var probe = ModelEvaluator.Check(model.ToBytes(), calibrationData, modelOptions.Output, modelPath);
        if (calibrationData is not null)
        {
            InputChecks.RequireFinite(calibrationData);
            InputChecks.RequireLabelsInRange(calibrationData, probe!.Classes);
        }

        var weights = WeightCatalog.Find(model);

        var values = weights.Select(w => model.ReadFloats(model.FindTensor(w.Name)!)).ToArray();
        for (var i = 0; i < weights.Count; i++)
        {
            InputChecks.RequireFinite(values[i], weights[i].Name, modelPath);
        }

        var sensitivities = Analyze(loaded, modelOptions, model, weights, name);

        Report(name, "search", 0.5);
        SearchResult search;
        try
        {
            search = MixedPrecisionSearch.Run(weights, values,
                new SearchInputs(policy.Quantization, policy.Pruning, policy.Encoding.Entropy == EntropyCoding.Huffman, sensitivities,
                    MeasuredLossFor(loaded, modelOptions, model)),
                new SynchronousProgress<double>(f => Report(name, "search", 0.5 + (0.2 * f))));
        }
        catch (QuantException e) when (e.Location is null && e.Code is ErrorCode.BudgetInfeasible or ErrorCode.QuantizerNeedsHessian)
        {
            // The search knows no file; the setting to change is in the policy.
            var pointer = e.Code == ErrorCode.BudgetInfeasible ? "/quantization/budget"
                : policy.Quantization.Omega == OmegaKind.HessianDiagonal ? "/quantization/omega" : "/quantization/method";
            throw new QuantException(e.Code, $"Model {name}: {e.Message}", loaded.Locate(pointer), e);
        }
        var stored = search.Tensors.Select(d => d.Stored).ToArray();

        Report(name, "encode", 0.7);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["model"] = name,
            ["source"] = Path.GetFileName(modelPath),
            ["producer"] = "QuantTasks " + ToolVersion,
        };
        var blob = BlobWriter.Write(model, stored, hash, metadata, policy.Encoding.Entropy == EntropyCoding.Huffman);
        foreach (var decision in search.Tensors)
        {
            if (blob.TensorBytes[decision.Weight.Name] != decision.Bytes)
            {
                throw new QuantException(ErrorCode.Internal,
                    $"The size model predicted {decision.Bytes} bytes for tensor '{decision.Weight.Name}'; the blob holds {blob.TensorBytes[decision.Weight.Name]}.");
            }
        }

        Report(name, "evaluate", 0.8);
        var accuracy = policy.Data.Evaluation is { } evaluation
            ? Evaluate(model, QuantBlob.Read(blob.Bytes), DataFile.Load(loaded.Resolve(evaluation)), modelOptions.Output, policy.Accuracy, modelPath)
            : null;

        Report(name, "generate", 0.9);
        var originalBytes = weights.Sum(w => w.Params * 4);
        var totalParams = weights.Sum(w => w.Params);
        var tensors = search.Tensors.Select(d => new TensorReport(
            d.Weight.Name,
            d.Weight.Params,
            d.Bits ?? 32,
            d.Bits is null ? "float" : MethodName(d.Method),
            Math.Round(d.Sparsity, 6),
            d.Sensitivity,
            d.Bytes)).ToArray();
        var report = new ModelReport(
            name,
            modelPath,
            blobPath,
            originalBytes,
            blob.PayloadBytes,
            blob.PayloadBytes == 0 ? 0 : (double)originalBytes / blob.PayloadBytes,
            totalParams == 0 ? 0 : blob.PayloadBytes * 8.0 / totalParams,
            Math.Round(clock.Elapsed.TotalSeconds, 3),
            false,
            accuracy,
            tensors,
            key);
        Report(name, "done", 1);
        report = report with { Stages = StageSeconds() };
        var code = LoaderGenerator.Generate(@namespace, report, ToolVersion);
        options.Cache?.Put(key, new CachedResult(name, blob.Bytes, code, JsonSerializer.Serialize(report, QuantizationReport.JsonOptions)), _note);
        return (new ModelArtifacts(report, blobPath, codePath, @namespace, inputs), blob.Bytes, code);
    }

    /// <summary>
    /// The Hessian analysis the search needs: none with sensitivity.method none; otherwise the trace (and the
    /// diagonal, which Hessian-weighted quantizers use) or the top eigenvalue, of the tensors that are quantized.
    /// </summary>
    private Dictionary<string, TensorSensitivityInput>? Analyze(LoadedPolicy loaded, ModelOptions modelOptions, OnnxModel model, IReadOnlyList<WeightTensor> weights, string name)
    {
        var policy = loaded.Policy;
        var sensitivity = policy.Sensitivity;
        if (sensitivity.Method == SensitivityMethod.None || policy.Data.Calibration is not { } calibration)
        {
            return null;
        }

        var quantization = policy.Quantization;
        var analyzed = weights.Where(w => !MixedPrecisionSearch.KeepsFloat(quantization, w)).ToArray();
        if (analyzed.Length == 0)
        {
            return null;
        }

        var methods = analyzed.Select(w => MixedPrecisionSearch.OverrideFor(quantization, w)?.Method ?? quantization.Method);
        var needsDiagonal = methods.Any(TensorQuantizer.UsesHessianDiagonal) || quantization.Omega == OmegaKind.HessianDiagonal;
        var method = sensitivity.Method == SensitivityMethod.Trace ? AnalysisMethod.Trace
            : needsDiagonal ? AnalysisMethod.Both : AnalysisMethod.Eigenvalue;
        var options = new AnalysisOptions(method, sensitivity.Loss, sensitivity.Samples, sensitivity.BatchSize,
            sensitivity.MaxIterations, sensitivity.Tolerance, sensitivity.Seed, sensitivity.Device, modelOptions.Output);
        Report(name, "analyze", 0.1);
        var steps = options.Method == AnalysisMethod.Both ? 2.0 : 1.0;
        var progress = new SynchronousProgress<EstimatorProgress>(p =>
            Report(name, "analyze", 0.1 + (0.4 * (((p.Estimator == "eigenvalue" && steps == 2 ? 1 : 0) + ((double)p.Step / p.MaxSteps)) / steps))));
        var report = SensitivityAnalysis.Run(model, analyzed, DataFile.Load(loaded.Resolve(calibration)), options, progress, _note);
        return report.Tensors.ToDictionary(
            t => t.Name,
            t => new TensorSensitivityInput(
                sensitivity.Method == SensitivityMethod.Eigenvalue ? t.TopEigenvalue!.Value / t.Params : t.Trace!.Value / t.Params,
                t.Diagonal),
            StringComparer.Ordinal);
    }

    private static AccuracyReport Evaluate(OnnxModel model, QuantBlob blob, DataFile data, string? output, AccuracyOptions options, string modelPath)
    {
        InputChecks.RequireFinite(data);
        var baseline = ModelEvaluator.Run(model.ToBytes(), data, output, modelPath);
        InputChecks.RequireLabelsInRange(data, baseline.Classes);
        var quantized = ModelEvaluator.Run(blob.DecodeOnnxModel(), data, output, modelPath);
        var labels = data.Labels();
        var (metric, before, after) = options.Metric switch
        {
            AccuracyMetric.Top1 when labels is not null =>
                ("top1", ModelEvaluator.Top1(baseline, labels), ModelEvaluator.Top1(quantized, labels)),
            AccuracyMetric.Cosine => ("cosine", 100.0, ModelEvaluator.Cosine(baseline, quantized)),
            _ => ("agreement", 100.0, ModelEvaluator.Agreement(baseline, quantized)),
        };
        var drop = before - after;
        return new AccuracyReport(metric, before, after, drop, options.MaxDrop, drop <= options.MaxDrop + 1e-9, baseline.Samples);
    }

    /// <summary>For <c>quantization.omega: measured</c>: the loss increase on the calibration samples, by ONNX Runtime.</summary>
    private static Func<string, float[], double>? MeasuredLossFor(LoadedPolicy loaded, ModelOptions modelOptions, OnnxModel model)
    {
        if (loaded.Policy.Quantization.Omega != OmegaKind.Measured)
        {
            return null;
        }

        var calibration = loaded.Policy.Data.Calibration ?? throw new QuantException(ErrorCode.PolicyMissingKey,
            "quantization.omega is measured, which runs the model on calibration samples: add data.calibration (an .npz file), or use omega: sensitivity.",
            loaded.Locate("/quantization/omega"));
        var measured = new MeasuredLoss(model, DataFile.Load(loaded.Resolve(calibration)), modelOptions.Output);
        return measured.Increase;
    }

    /// <summary>The model, its external data files and the data files: what a build must watch for changes.</summary>
    private static string[] InputFiles(LoadedPolicy loaded, OnnxModel model)
    {
        var folder = Path.GetDirectoryName(model.FullPath)!;
        var data = new[] { loaded.Policy.Data.Calibration, loaded.Policy.Data.Evaluation }
            .OfType<string>()
            .Select(loaded.Resolve);
        return new[] { model.FullPath }
            .Concat(model.ExternalDataLocations.Select(l => Path.GetFullPath(Path.Combine(folder, l))))
            .Concat(data)
            .Distinct(StringComparer.Ordinal)
            .ToArray();
    }

    /// <summary>
    /// The engine's own identity for content hashes: its version and the bytes of the assemblies that compute
    /// a result, so that a changed engine never reuses another engine's entries even when the version number
    /// did not move (builds are deterministic, so an unchanged engine keeps its fingerprint).
    /// </summary>
    private static readonly Lazy<string> s_engineFingerprint = new(() =>
    {
        var hash = new ContentHash().Add("version", ToolVersion);
        foreach (var assembly in new[] { typeof(QuantizationPipeline).Assembly, typeof(ContentHash).Assembly, typeof(QuantBlob).Assembly })
        {
            hash.AddFile(assembly.GetName().Name!, assembly.Location.Length > 0 ? assembly.Location : null);
        }

        return Convert.ToHexStringLower(hash.Finish());
    });

    private static byte[] Hash(LoadedPolicy loaded, ModelOptions modelOptions, OnnxModel model, string @namespace)
    {
        // The policy without its model list: another model's entry does not change this model's result.
        var policy = JsonSerializer.SerializeToNode(loaded.Policy, PolicyLoader.BindingOptions)!.AsObject();
        policy.Remove("models");
        var hash = new ContentHash()
            .Add("tool", ToolVersion)
            .Add("engine", s_engineFingerprint.Value)
            .Add("namespace", @namespace)
            .AddFile("model", model.FullPath)
            .Add("model-options", JsonSerializer.Serialize(modelOptions, PolicyLoader.BindingOptions))
            .Add("policy", policy.ToJsonString())
            .AddFile("calibration", loaded.Policy.Data.Calibration is { } c ? loaded.Resolve(c) : null)
            .AddFile("evaluation", loaded.Policy.Data.Evaluation is { } e ? loaded.Resolve(e) : null);
        var folder = Path.GetDirectoryName(model.FullPath)!;
        foreach (var location in model.ExternalDataLocations)
        {
            hash.AddFile("external:" + location, Path.Combine(folder, location));
        }

        return hash.Finish();
    }

    private static QuantException GateFailure(LoadedPolicy loaded, ModelReport report)
    {
        var a = report.Accuracy!;
        return new QuantException(ErrorCode.AccuracyGateFailed,
            string.Create(CultureInfo.InvariantCulture,
                $"Model {report.Name} lost {a.Drop:0.00} pp of {a.Metric} ({a.Baseline:0.00}% float, {a.Quantized:0.00}% quantized, {a.Samples} samples); the policy allows {a.MaxDrop:0.00} pp. Raise the budget, keep sensitive tensors at more bits with quantization.overrides, or allow more with accuracy.max_drop."),
            loaded.Locate("/accuracy/max_drop"));
    }

    private static string MethodName(QuantizationMethod method) =>
        JsonNamingPolicy.KebabCaseLower.ConvertName(method.ToString());

    private void Report(string model, string stage, double fraction)
    {
        lock (_stageGate)
        {
            if (stage != _stage)
            {
                if (_stage is not null && _stage != "done")
                {
                    _stageSeconds[_stage] = Math.Round(_stageSeconds.GetValueOrDefault(_stage) + _stageClock.Elapsed.TotalSeconds, 3);
                }

                _stage = stage;
                _stageClock.Restart();
            }
        }

        _progress?.Report(new PipelineProgress(model, stage, fraction));
    }

    /// <summary>Starts timing a model's stages afresh.</summary>
    private void StartStages()
    {
        lock (_stageGate)
        {
            _stage = null;
            _stageSeconds = new Dictionary<string, double>(StringComparer.Ordinal);
        }
    }

    /// <summary>Seconds per stage of the current model, once its last stage has ended.</summary>
    private Dictionary<string, double> StageSeconds()
    {
        lock (_stageGate)
        {
            return new Dictionary<string, double>(_stageSeconds, StringComparer.Ordinal);
        }
    }
}
