using QuantTasks.Blob;
using QuantTasks.Caching;
using QuantTasks.Data;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Reporting;
using QuantTasks.Search;
using QuantTasks.Weights;

namespace QuantTasks.Engine.Pipeline;

/// <summary>
/// Everything the stages know about one model, filled in stage by stage: each stage reads what earlier stages
/// wrote and writes its own part. It is the one explicit state of a model's job; nothing is passed around beside it.
/// </summary>
internal sealed class ModelJob
{
    public ModelJob(LoadedPolicy loaded, ModelOptions options, PipelineOptions pipeline, QuantizerRegistry quantizers)
    {
        Loaded = loaded;
        Options = options;
        Pipeline = pipeline;
        Quantizers = quantizers;
        Name = PolicyLoader.ModelName(options);
        ModelPath = loaded.Resolve(options.Path);
        Namespace = options.Namespace ?? pipeline.RootNamespace + ".Models";
    }

    // ---- given ----

    /// <summary>The policy.</summary>
    public LoadedPolicy Loaded { get; }

    public QuantPolicy Policy => Loaded.Policy;

    /// <summary>This model's entry of the policy.</summary>
    public ModelOptions Options { get; }

    /// <summary>Where outputs go, and the cache.</summary>
    public PipelineOptions Pipeline { get; }

    /// <summary>The quantization methods by name.</summary>
    public QuantizerRegistry Quantizers { get; }

    /// <summary>The model's name (the generated class without <c>Model</c>).</summary>
    public string Name { get; }

    /// <summary>The model file, resolved against the policy's folder.</summary>
    public string ModelPath { get; }

    /// <summary>The generated class's namespace.</summary>
    public string Namespace { get; }

    public string BlobPath => Path.Combine(Pipeline.OutputDirectory, CodeGeneration.LoaderGenerator.BlobFileName(Name));

    public string CodePath => Path.Combine(Pipeline.OutputDirectory, CodeGeneration.LoaderGenerator.ClassName(Name) + ".g.cs");

    // ---- load ----

    /// <summary>The model with its tensors resident.</summary>
    public OnnxModel Model { get; set; } = null!;

    /// <summary>Every file the result depends on: what a build must watch for changes.</summary>
    public IReadOnlyList<string> Inputs { get; set; } = [];

    /// <summary>The content hash of everything the result depends on.</summary>
    public byte[] Hash { get; set; } = [];

    public string Key => Convert.ToHexStringLower(Hash);

    /// <summary>The cache's entry for the key, when it had one: the remaining stages are skipped.</summary>
    public CachedResult? Cached { get; set; }

    /// <summary>The calibration samples, when the policy names them.</summary>
    public DataFile? Calibration { get; set; }

    // ---- plan ----

    /// <summary>The quantizable weights, in catalog order.</summary>
    public IReadOnlyList<WeightTensor> Weights { get; set; } = [];

    /// <summary>Their float values, in the same order (a refine stage may change float tensors' values).</summary>
    public float[][] Values { get; set; } = [];

    /// <summary>Per weight: float, or its quantizer and candidate widths.</summary>
    public IReadOnlyList<TensorPlan> Plans { get; set; } = [];

    // ---- analyze ----

    /// <summary>The analysis's sensitivity and diagonal per tensor name; null without analysis.</summary>
    public IReadOnlyDictionary<string, TensorSensitivityInput>? Sensitivities { get; set; }

    // ---- activations ----

    /// <summary>For compensated rounding: each compensated layer's input Hessian; null otherwise.</summary>
    public IReadOnlyDictionary<string, Compensation.LayerHessian>? LayerHessians { get; set; }

    /// <summary>The scratch file the layer Hessians were spilled to (large networks), disposed when the job ends; null when they stay in memory.</summary>
    public Compensation.SpillFile? HessianSpill { get; set; }

    // ---- search ----

    /// <summary>The candidate chosen per tensor.</summary>
    public SearchResult Search { get; set; } = null!;

    // ---- quantize, refine ----

    /// <summary>
    /// The tensors as the blob will store them, in catalog order. The quantize stage fills it; refine stages may
    /// replace entries (new levels, scales, codebooks or float values) but keep symbols and masks, so that the
    /// sizes the search chose hold.
    /// </summary>
    public StoredTensor[] Tensors { get; set; } = [];

    /// <summary>
    /// The model whose graph the blob stores, when a refine stage trained its float initializers (biases); null
    /// while the source model's own graph is stored. The source model stays the float baseline the gate compares with.
    /// </summary>
    public OnnxModel? RefinedModel { get; set; }

    /// <summary>The joint check's figures, when it ran.</summary>
    public JointCheckSummary? JointCheck { get; set; }

    /// <summary>Fine-tuning's curve, when the policy fine-tunes.</summary>
    public TrainingReport? Training { get; set; }

    // ---- encode, evaluate, report, generate ----

    /// <summary>The blob.</summary>
    public BlobResult Blob { get; set; } = null!;

    /// <summary>The accuracy gate's measurement, when the policy names evaluation data.</summary>
    public AccuracyReport? Accuracy { get; set; }

    /// <summary>Without evaluation data: fidelity to the float model on the calibration samples.</summary>
    public FidelityReport? Fidelity { get; set; }

    /// <summary>The model's report entry.</summary>
    public ModelReport Report { get; set; } = null!;

    /// <summary>
    /// Drops what only the stages needed (the model, its values, the search, the stored tensors, the Hessians and
    /// their scratch file, the calibration data) once the model's stages are done. Outputs are written only after
    /// every model's job, so without this a policy with several models held each finished model's working state
    /// until the last one ended. What writing and the gate need stays: blob, code, report, paths and inputs.
    /// </summary>
    public void ReleaseWorkingState()
    {
        HessianSpill?.Dispose();
        HessianSpill = null;
        LayerHessians = null;
        Sensitivities = null;
        Calibration = null;
        Values = [];
        Weights = [];
        Plans = [];
        Tensors = [];
        Search = null!;
        RefinedModel = null;
        Model = null!;
    }

    /// <summary>The generated loader.</summary>
    public string Code { get; set; } = "";
}
