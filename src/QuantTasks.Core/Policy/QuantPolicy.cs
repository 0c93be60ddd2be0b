namespace QuantTasks.Policy;

/// <summary>
/// A <c>quant.yaml</c> policy, version 1. Property names map to snake_case keys (<c>BatchSize</c> is
/// <c>batch_size</c>); enum values to kebab-case (<c>HessianKmeans</c> is <c>hessian-kmeans</c>). Every default
/// below is also the schema's <c>default</c>; a test keeps <c>quant.schema.json</c> and these types in step.
/// </summary>
internal sealed class QuantPolicy
{
    /// <summary>The policy format version. Default and only value: 1.</summary>
    public int Version { get; init; } = 1;

    /// <summary>The models to compress; at least one.</summary>
    public IReadOnlyList<ModelOptions> Models { get; init; } = [];

    /// <summary>Calibration and evaluation data files.</summary>
    public DataOptions Data { get; init; } = new();

    /// <summary>How sensitivity is measured.</summary>
    public SensitivityOptions Sensitivity { get; init; } = new();

    /// <summary>How weights are quantized, under which budget.</summary>
    public QuantizationOptions Quantization { get; init; } = new();

    /// <summary>Magnitude pruning before quantization.</summary>
    public PruningOptions Pruning { get; init; } = new();

    /// <summary>How symbols are coded in the blob.</summary>
    public EncodingOptions Encoding { get; init; } = new();

    /// <summary>The accuracy gate.</summary>
    public AccuracyOptions Accuracy { get; init; } = new();

    /// <summary>Fine-tuning of the quantized model's shared values. Default (null): none.</summary>
    public FinetuneOptions? Finetune { get; init; }
}

/// <summary>One model to compress.</summary>
internal sealed class ModelOptions
{
    /// <summary>The ONNX file, relative to the policy file. Required.</summary>
    public string Path { get; init; } = "";

    /// <summary>Generated class name without the <c>Model</c> suffix. Default (null): from the file name.</summary>
    public string? Name { get; init; }

    /// <summary>Namespace of the generated class. Default (null): the project's RootNamespace + <c>.Models</c>.</summary>
    public string? Namespace { get; init; }

    /// <summary>The graph output holding the logits. Default (null): the first graph output.</summary>
    public string? Output { get; init; }
}

/// <summary>Data files, relative to the policy file.</summary>
internal sealed class DataOptions
{
    /// <summary>Samples for the Hessian analysis. Default (null): none, which needs <c>sensitivity.method: none</c>.</summary>
    public string? Calibration { get; init; }

    /// <summary>Samples for the accuracy gate. Default (null): none, and no gate.</summary>
    public string? Evaluation { get; init; }

    /// <summary>Samples for fine-tuning (labels optional). Default (null): none; <c>finetune</c> needs it.</summary>
    public string? Training { get; init; }
}

/// <summary>Which sensitivity measure the bit search uses.</summary>
internal enum SensitivityMethod
{
    /// <summary>Hessian trace by Hutchinson's estimator (HAWQ-V2). The default.</summary>
    Trace,

    /// <summary>Top Hessian eigenvalue by power iteration (HAWQ).</summary>
    Eigenvalue,

    /// <summary>Every tensor equally sensitive.</summary>
    None,
}

/// <summary>The loss whose Hessian is measured.</summary>
internal enum LossKind
{
    /// <summary>
    /// Fitted to the output: cross-entropy on class logits with labels, KL from the float model's class
    /// distribution without, binary KL for a Sigmoid map, squared error for anything else. The default.
    /// </summary>
    Auto,

    /// <summary>Mean cross-entropy against the labels.</summary>
    CrossEntropy,

    /// <summary>KL divergence from the float model's own softmax output (needs no labels).</summary>
    Kl,

    /// <summary>Mean squared error to the float model's outputs.</summary>
    Mse,
}

/// <summary>Where the Hessian engine runs.</summary>
internal enum DeviceKind
{
    /// <summary>CUDA when TorchSharp reports it, otherwise CPU. The default.</summary>
    Auto,

    /// <summary>The CPU.</summary>
    Cpu,

    /// <summary>CUDA; an error when it is not available.</summary>
    Cuda,
}

/// <summary>The Hessian sensitivity analysis.</summary>
internal sealed class SensitivityOptions
{
    /// <summary>
    /// Default: <see cref="SensitivityMethod.None"/>: the default Omega (calibrated-output-error) and compensation need no
    /// analysis, and they won on every fixture (docs/policy.md, "The defaults").
    /// </summary>
    public SensitivityMethod Method { get; init; } = SensitivityMethod.None;

    /// <summary>Default: <see cref="LossKind.Auto"/>.</summary>
    public LossKind Loss { get; init; } = LossKind.Auto;

    /// <summary>Calibration samples used. Default: 512.</summary>
    public int Samples { get; init; } = PolicyDefaults.Samples;

    /// <summary>Samples per batch. Default: 64.</summary>
    public int BatchSize { get; init; } = PolicyDefaults.BatchSize;

    /// <summary>Largest number of probes or power iterations. Default: 200.</summary>
    public int MaxIterations { get; init; } = PolicyDefaults.MaxIterations;

    /// <summary>Relative change below which an estimate stops. Default: 0.01.</summary>
    public double Tolerance { get; init; } = PolicyDefaults.Tolerance;

    /// <summary>
    /// Hutch++'s sketch rank: the part of the Hessian in the span of H S for this many random S is computed exactly
    /// (2 x sketch Hessian-vector products) and only the rest is probed; 0 is Hutchinson's estimator alone. Default: 16.
    /// </summary>
    public int Sketch { get; init; } = PolicyDefaults.Sketch;

    /// <summary>Seed of the random probes. Default: 0.</summary>
    public long Seed { get; init; }

    /// <summary>Default: <see cref="DeviceKind.Auto"/>.</summary>
    public DeviceKind Device { get; init; } = DeviceKind.Auto;
}

/// <summary>
/// The names <c>quantization.method</c> takes. They are names, not an enum: each is a registered
/// <see cref="Quantization.Quantizer"/>, and a name the schema allows but nothing implements is an error.
/// </summary>
internal static class QuantizationMethods
{
    /// <summary>Evenly spaced levels.</summary>
    public const string Uniform = "uniform";

    /// <summary>k-means levels (Deep Compression).</summary>
    public const string Kmeans = "kmeans";

    /// <summary>Hessian-weighted k-means (Choi et al.); needs the trace analysis's diagonal.</summary>
    public const string HessianKmeans = "hessian-kmeans";

    /// <summary>Entropy-constrained scalar quantization.</summary>
    public const string Ecsq = "ecsq";

    /// <summary>The search picks per tensor among <see cref="Searched"/>.</summary>
    public const string Auto = "auto";

    /// <summary>
    /// The quantizers <see cref="Auto"/> searches: evenly spaced levels, and entropy-constrained levels (a codebook
    /// that also prices each level's code length). k-means is ECSQ without the price; the Hessian-weighted one needs
    /// the analysis.
    /// </summary>
    public static IReadOnlyList<string> Searched { get; } = [Uniform, Ecsq];
}

/// <summary>How many scales or codebooks a tensor has.</summary>
internal enum Granularity
{
    /// <summary>One per output channel.</summary>
    PerChannel,

    /// <summary>One per tensor.</summary>
    PerTensor,

    /// <summary>
    /// The search picks per tensor: each tensor's candidates span both. The default: across the fixtures it lost
    /// least (docs/policy.md, "Choosing the defaults"), since per-channel grids hold channels of very different
    /// scales while per-tensor grids code to fewer bytes where the scales agree.
    /// </summary>
    Auto,
}

/// <summary>How uniform quantization places its levels.</summary>
internal enum UniformScheme
{
    /// <summary>Over each channel's own [min, max]. The default.</summary>
    Asymmetric,

    /// <summary>Centred on zero over [-max|w|, max|w|]; zero is a level.</summary>
    Symmetric,
}

/// <summary>Quantization and the size budget.</summary>
internal sealed class QuantizationOptions
{
    /// <summary>Default: <see cref="QuantizationMethods.Uniform"/>.</summary>
    public string Method { get; init; } = QuantizationMethods.Uniform;

    /// <summary>Default: <see cref="Granularity.Auto"/>.</summary>
    public Granularity Granularity { get; init; } = Granularity.Auto;

    /// <summary>Uniform levels. Default: <see cref="UniformScheme.Asymmetric"/>.</summary>
    public UniformScheme Scheme { get; init; } = UniformScheme.Asymmetric;

    /// <summary>Candidate bit widths. Default: 2, 3, 4, 5, 6, 8.</summary>
    public IReadOnlyList<int> Bits { get; init; } = PolicyDefaults.Bits;

    /// <summary>The size budget. Default: a compression ratio of 8.</summary>
    public BudgetOptions Budget { get; init; } = new() { CompressionRatio = PolicyDefaults.CompressionRatio };

    /// <summary>Globs of tensors left in float32. Default: <c>*bias*</c>.</summary>
    public IReadOnlyList<string> KeepFloat { get; init; } = PolicyDefaults.KeepFloat;

    /// <summary>Fixed choices by tensor-name glob, first match wins. Default: none.</summary>
    public IReadOnlyList<OverrideOptions> Overrides { get; init; } = [];

    /// <summary>How bits are allocated under the budget. Default: <see cref="SearchAlgorithm.Dp"/>.</summary>
    public SearchAlgorithm Search { get; init; } = SearchAlgorithm.Dp;

    /// <summary>
    /// What the search minimises for each tensor. Default: <see cref="OmegaKind.CalibratedOutputError"/> with
    /// calibration data; without it, <see cref="OmegaKind.Sensitivity"/> (the loader fills that in).
    /// </summary>
    public OmegaKind Omega { get; init; } = OmegaKind.CalibratedOutputError;

    /// <summary>Settings of the ecsq method.</summary>
    public EcsqOptions Ecsq { get; init; } = new();

    /// <summary>
    /// Second-order compensated rounding. Default: <see cref="CompensationKind.Gptq"/> with calibration data;
    /// without it, <see cref="CompensationKind.None"/> (the loader fills that in).
    /// </summary>
    public CompensationKind Compensation { get; init; } = CompensationKind.Gptq;

    /// <summary>Settings of <see cref="CompensationKind.Gptq"/>.</summary>
    public GptqOptions Gptq { get; init; } = new();

    /// <summary>The combined result measured after the search, and corrected when it adds more loss than assumed.</summary>
    public JointCheckSettings JointCheck { get; init; } = new();

    /// <summary>
    /// The temperature at which the measured losses (the search's Omega, the joint check) compare a Softmax output's
    /// class distributions without labels: softmax(logits / T). Default: 2.
    /// </summary>
    public double SoftmaxTemperature { get; init; } = PolicyDefaults.SoftmaxTemperature;

    /// <summary>Seed of k-means++ seeding. Default: 0.</summary>
    public long Seed { get; init; }
}

/// <summary>
/// The joint check (<c>quantization.joint_check</c>): after the search, one forward pass with every tensor
/// quantized; when its loss exceeds the sum of the tensors' own losses by more than the margin, the worst tensors'
/// candidates are measured again in that context and the budget is solved again (<see cref="Search.JointCheck"/>).
/// </summary>
internal sealed class JointCheckSettings
{
    /// <summary>Whether to check (needs data.calibration). Default: true.</summary>
    public bool Enabled { get; init; } = PolicyDefaults.JointCheck;

    /// <summary>How far (a fraction) the measured loss may exceed the assumed sum. Default: 0.25.</summary>
    public double Margin { get; init; } = PolicyDefaults.JointCheckMargin;

    /// <summary>Most correction rounds. Default: 2.</summary>
    public int Rounds { get; init; } = PolicyDefaults.JointCheckRounds;

    /// <summary>Calibration samples of the forward passes (the first ones). Default: 128.</summary>
    public int Samples { get; init; } = PolicyDefaults.JointCheckSamples;

    /// <summary>Most forward passes of the check, its corrections included. Default: 100.</summary>
    public int MaxPasses { get; init; } = PolicyDefaults.JointCheckMaxPasses;
}

/// <summary>The quantization cost Omega the bit search minimises, summed over tensors.</summary>
internal enum OmegaKind
{
    /// <summary>HAWQ's: the tensor's sensitivity (trace or top eigenvalue per parameter) x ||Q(W) - W||^2. The default.</summary>
    Sensitivity,

    /// <summary>
    /// The second-order term without cross terms: sum over weights of h_ii x (q_i - w_i)^2, with the Hessian
    /// diagonal from the trace analysis (floored at a tenth of its mean positive value, as the Hessian-weighted
    /// quantizers do). It knows which weights of a tensor matter, where the sensitivity only knows their average.
    /// </summary>
    HessianDiagonal,

    /// <summary>
    /// The loss increase measured by ONNX Runtime on the calibration samples with only that tensor quantized: one
    /// forward pass over the samples per candidate, no second-order approximation and no estimator noise.
    /// </summary>
    Measured,

    /// <summary>
    /// The layer's output error on the calibration activations, tr((W - Q) H (W - Q)^T) with H = X X^T: what
    /// compensated rounding minimises, label-free, from the same layer Hessians.
    /// </summary>
    OutputError,

    /// <summary>
    /// The layer's output error divided by the energy of its float output, tr(W H W^T): each layer's error relative
    /// to what it carries, so that layers whose outputs are normalised afterwards (LayerNorm, BatchNorm) are
    /// compared on the scale the next layer sees.
    /// </summary>
    RelativeOutputError,

    /// <summary>
    /// The layer's output error in the loss's units: per tensor, one candidate's loss increase is measured by ONNX
    /// Runtime on the calibration samples (one forward pass per tensor) and divides its output error; every
    /// candidate of the tensor is scaled by that ratio. The output error ranks a tensor's own candidates, the
    /// measurement says how much its layer's output matters downstream, which no layer-local cost knows.
    /// </summary>
    CalibratedOutputError,
}

/// <summary>What the Omega kinds need.</summary>
internal static class OmegaKinds
{
    /// <summary>Whether the Omega is computed from the layers' input Hessians (so the activations stage must run).</summary>
    public static bool UsesLayerHessians(this OmegaKind omega) => omega is OmegaKind.OutputError or OmegaKind.RelativeOutputError or OmegaKind.CalibratedOutputError;

    /// <summary>Whether the search runs the model on the calibration samples to measure losses.</summary>
    public static bool MeasuresLoss(this OmegaKind omega) => omega is OmegaKind.Measured or OmegaKind.CalibratedOutputError;
}

/// <summary>How the bit search allocates bits.</summary>
internal enum SearchAlgorithm
{
    /// <summary>Exact: dynamic programming over the tensors' sizes (multiple-choice knapsack). The default.</summary>
    Dp,

    /// <summary>HAWQ-V1's greedy order: repeatedly lower the tensor that loses least per byte saved.</summary>
    Greedy,
}

/// <summary>The two forms of entropy-constrained scalar quantization.</summary>
internal enum EcsqAlgorithm
{
    /// <summary>Lloyd-like iterations minimising distortion plus lambda times code length. The default.</summary>
    Iterative,

    /// <summary>Uniform cells with (Hessian-weighted) mean centres.</summary>
    Uniform,
}

/// <summary>How the search's candidates are rounded.</summary>
internal enum CompensationKind
{
    /// <summary>Each weight to its nearest level.</summary>
    None,

    /// <summary>Second-order compensated rounding, column by column (OBQ/GPTQ).</summary>
    Gptq,
}

/// <summary>The order in which GPTQ rounds a layer's input columns.</summary>
internal enum GptqOrder
{
    /// <summary>As the weight stores them.</summary>
    Natural,

    /// <summary>Largest Hessian diagonal first (GPTQ's act order).</summary>
    DescendingDiagonal,

    /// <summary>Both orders; each candidate keeps the one with the smaller layer output error.</summary>
    Auto,
}

/// <summary>Settings of <c>compensation: gptq</c>.</summary>
internal sealed class GptqOptions
{
    /// <summary>Fraction of the mean Hessian diagonal added to it. Default: 0.01.</summary>
    public double Dampening { get; init; } = PolicyDefaults.GptqDampening;

    /// <summary>Column order. Default: descending-diagonal.</summary>
    public GptqOrder Order { get; init; } = PolicyDefaults.GptqOrder;

    /// <summary>Calibration samples for the layer Hessians. Default: 512.</summary>
    public int Samples { get; init; } = PolicyDefaults.GptqSamples;

    /// <summary>How compensated pruning chooses the pruned weights. Default: saliency.</summary>
    public GptqMask Mask { get; init; } = GptqMask.Saliency;

    /// <summary>Whether each layer is compensated again on the outputs of the quantized layers before it. Default: false.</summary>
    public bool Sequential { get; init; } = PolicyDefaults.GptqSequential;

    /// <summary>Whether uniform grids get each channel's range clipped to the layer's input energy first. Default: false.</summary>
    public bool Clip { get; init; } = PolicyDefaults.GptqClip;
}

/// <summary>How <c>compensation: gptq</c> chooses the weights that pruning removes.</summary>
internal enum GptqMask
{
    /// <summary>Optimal Brain Surgeon's saliency, block by block during compensation (SparseGPT).</summary>
    Saliency,

    /// <summary>The magnitude mask chosen before quantization.</summary>
    Magnitude,
}

/// <summary>Entropy-constrained scalar quantization.</summary>
internal sealed class EcsqOptions
{
    /// <summary>Default: <see cref="EcsqAlgorithm.Iterative"/>.</summary>
    public EcsqAlgorithm Algorithm { get; init; } = EcsqAlgorithm.Iterative;

    /// <summary>
    /// Weight of code length against distortion, in units of the channel's (Hessian-weighted) variance per bit;
    /// 0 is k-means. Default: 0.005.
    /// </summary>
    public double Lambda { get; init; } = PolicyDefaults.EcsqLambda;
}

/// <summary>The size budget: exactly one of its three forms is set.</summary>
internal sealed class BudgetOptions
{
    /// <summary>Float32 weight bytes over compressed bytes, at least this.</summary>
    public double? CompressionRatio { get; init; }

    /// <summary>Compressed bytes of all weights, at most this.</summary>
    public ByteSize? MaxSize { get; init; }

    /// <summary>Average coded bits per weight, at most this.</summary>
    public double? AverageBits { get; init; }
}

/// <summary>A fixed choice for the tensors a glob matches.</summary>
internal sealed class OverrideOptions
{
    /// <summary>Glob (<c>*</c>, <c>?</c>) of tensor names. Required.</summary>
    public string Match { get; init; } = "";

    /// <summary>Bit width for the matches. Default (null): the search chooses.</summary>
    public int? Bits { get; init; }

    /// <summary>Quantizer for the matches. Default (null): the policy's method.</summary>
    public string? Method { get; init; }
}

/// <summary>Where the magnitude threshold of pruning is taken.</summary>
internal enum PruningScope
{
    /// <summary>Each tensor loses the same fraction of its own smallest weights. The default.</summary>
    PerTensor,

    /// <summary>One threshold over all quantized tensors: tensors of small weights lose more.</summary>
    Global,
}

/// <summary>Magnitude pruning.</summary>
internal sealed class PruningOptions
{
    /// <summary>Fraction of weights set to exactly zero before quantization. Default: 0 (off).</summary>
    public double Sparsity { get; init; }

    /// <summary>Default: <see cref="PruningScope.PerTensor"/>.</summary>
    public PruningScope Scope { get; init; } = PruningScope.PerTensor;

    /// <summary>
    /// Sparsities the bit search may choose from for each tensor (per-tensor magnitude pruning), together with
    /// its bit width: every (sparsity, bits) pair is a candidate with its own Omega and exact size. When given,
    /// <see cref="Sparsity"/> and <see cref="Scope"/> are not used. Default: none.
    /// </summary>
    public IReadOnlyList<double> Candidates { get; init; } = [];
}

/// <summary>The entropy coder.</summary>
internal enum EntropyCoding
{
    /// <summary>Canonical Huffman code per tensor. The default.</summary>
    Huffman,

    /// <summary>Fixed-width symbols.</summary>
    None,
}

/// <summary>Symbol coding.</summary>
internal sealed class EncodingOptions
{
    /// <summary>Default: <see cref="EntropyCoding.Huffman"/>.</summary>
    public EntropyCoding Entropy { get; init; } = EntropyCoding.Huffman;
}

/// <summary>What the accuracy gate measures.</summary>
internal enum AccuracyMetric
{
    /// <summary>Top-1 accuracy against labels; without them, fidelity to the float model following the output (agreement per class axis position, per element for maps, cosine for values). The default.</summary>
    Top1,

    /// <summary>Top-1 agreement with the float model.</summary>
    Agreement,

    /// <summary>Mean cosine similarity of outputs to the float model's, in percent.</summary>
    Cosine,
}

/// <summary>The accuracy gate.</summary>
internal sealed class AccuracyOptions
{
    /// <summary>Default: <see cref="AccuracyMetric.Top1"/>.</summary>
    public AccuracyMetric Metric { get; init; } = AccuracyMetric.Top1;

    /// <summary>Largest allowed drop, in percentage points. Default: 0.5.</summary>
    public double MaxDrop { get; init; } = PolicyDefaults.MaxDrop;
}

/// <summary>What fine-tuning minimises.</summary>
internal enum FinetuneLoss
{
    /// <summary>Mixed when the training file has labels, distillation when it has none. The default.</summary>
    Auto,

    /// <summary>Cross-entropy against the labels.</summary>
    CrossEntropy,

    /// <summary>Divergence from the float model's outputs at a temperature; needs no labels.</summary>
    Distillation,

    /// <summary>alpha x cross-entropy + (1 - alpha) x distillation.</summary>
    Mixed,
}

/// <summary>The optimizer of fine-tuning.</summary>
internal enum FinetuneOptimizer
{
    /// <summary>Adam. The default.</summary>
    Adam,

    /// <summary>Stochastic gradient descent with momentum.</summary>
    Sgd,
}

/// <summary>How the learning rate changes over the epochs.</summary>
internal enum LearningRateSchedule
{
    /// <summary>Half a cosine from the learning rate down to zero. The default.</summary>
    Cosine,

    /// <summary>The same rate throughout.</summary>
    Constant,

    /// <summary>A tenth of the rate after half the epochs, a hundredth after three quarters.</summary>
    Step,
}

/// <summary>What fine-tuning trains.</summary>
internal enum FinetuneMode
{
    /// <summary>The shared values (levels, scales and offsets) and the float tensors; symbols stay. The default.</summary>
    Shared,

    /// <summary>
    /// First the float weights, quantization-aware (rounded to the current levels in the forward pass, the
    /// rounding passed straight through in the backward pass); then the trained weights on those levels (new
    /// symbols, the budget checked again: quantized again with the search's choices, or searched again, when they
    /// no longer fit), then the shared values as in <see cref="Shared"/>: twice the epochs, for more ratio at the
    /// same accuracy.
    /// </summary>
    Qat,
}

/// <summary>Which tensors train when.</summary>
internal enum FinetuneOrder
{
    /// <summary>All quantized and float tensors from the first epoch. The default.</summary>
    Joint,

    /// <summary>
    /// HAWQ's order: the quantized tensors are unfrozen in stages, the most sensitive first (by the analysis's
    /// sensitivity); the float tensors train throughout.
    /// </summary>
    Hawq,
}

/// <summary>
/// Fine-tuning after quantization: every quantized tensor keeps its symbols and pruning mask, and its shared
/// values (codebook levels, or uniform scales and offsets) are trained, each level by the sum of its weights'
/// gradients; float tensors (biases, keep_float) train freely. The coded size is the one the search chose.
/// </summary>
internal sealed class FinetuneOptions
{
    /// <summary>Default: <see cref="FinetuneMode.Shared"/>.</summary>
    public FinetuneMode Mode { get; init; } = FinetuneMode.Shared;

    /// <summary>Passes over the training samples (per phase of <c>mode: qat</c>). Default: 10.</summary>
    public int Epochs { get; init; } = PolicyDefaults.FinetuneEpochs;

    /// <summary>Samples per step. Default: 64.</summary>
    public int BatchSize { get; init; } = PolicyDefaults.FinetuneBatchSize;

    /// <summary>The first epoch's learning rate. Default: 0.001.</summary>
    public double LearningRate { get; init; } = PolicyDefaults.FinetuneLearningRate;

    /// <summary>Default: <see cref="LearningRateSchedule.Cosine"/>.</summary>
    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Cosine;

    /// <summary>Default: <see cref="FinetuneOptimizer.Adam"/>.</summary>
    public FinetuneOptimizer Optimizer { get; init; } = FinetuneOptimizer.Adam;

    /// <summary>Momentum of <c>optimizer: sgd</c>. Default: 0.9.</summary>
    public double Momentum { get; init; } = PolicyDefaults.FinetuneMomentum;

    /// <summary>Default: <see cref="FinetuneLoss.Auto"/>.</summary>
    public FinetuneLoss Loss { get; init; } = FinetuneLoss.Auto;

    /// <summary>Distillation's temperature. Default: 2.</summary>
    public double Temperature { get; init; } = PolicyDefaults.FinetuneTemperature;

    /// <summary>Weight of cross-entropy in <c>loss: mixed</c>. Default: 0.5.</summary>
    public double Alpha { get; init; } = PolicyDefaults.FinetuneAlpha;

    /// <summary>Fraction of the training samples held out for early stopping. Default: 0.1.</summary>
    public double Validation { get; init; } = PolicyDefaults.FinetuneValidation;

    /// <summary>Epochs without a better held-out loss before training stops; 0 never stops early. Default: 3.</summary>
    public int Patience { get; init; } = PolicyDefaults.FinetunePatience;

    /// <summary>Default: <see cref="FinetuneOrder.Joint"/>.</summary>
    public FinetuneOrder Order { get; init; } = FinetuneOrder.Joint;

    /// <summary>Unfreezing stages of <c>order: hawq</c>. Default: 3.</summary>
    public int Stages { get; init; } = PolicyDefaults.FinetuneStages;

    /// <summary>Seed of the shuffling and of the held-out split. Default: 0.</summary>
    public long Seed { get; init; }

    /// <summary>Default: <see cref="DeviceKind.Auto"/>.</summary>
    public DeviceKind Device { get; init; } = DeviceKind.Auto;
}
