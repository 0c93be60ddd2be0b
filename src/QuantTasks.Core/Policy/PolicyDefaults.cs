namespace QuantTasks.Policy;

/// <summary>
/// The policy's numeric defaults, in one place: the options classes, the analysis, the quantizers and the
/// <c>init</c> template read them from here, and a test holds <c>quant.schema.json</c>'s "default" values to what
/// the options bind to.
/// </summary>
internal static class PolicyDefaults
{
    /// <summary>Calibration samples the analysis uses.</summary>
    public const int Samples = 512;

    /// <summary>Samples per batch of the analysis.</summary>
    public const int BatchSize = 64;

    /// <summary>Most probes or power iterations per estimate.</summary>
    public const int MaxIterations = 200;

    /// <summary>Relative change below which an estimate stops.</summary>
    public const double Tolerance = 0.01;

    /// <summary>ECSQ's rate weight.</summary>
    public const double EcsqLambda = 0.005;

    /// <summary>GPTQ's dampening: a fraction of the mean diagonal of the layer Hessian.</summary>
    public const double GptqDampening = 0.01;

    /// <summary>Calibration samples whose activations make the layer Hessians.</summary>
    public const int GptqSamples = 128;

    /// <summary>
    /// GPTQ's sequential mode (each layer on the quantized layers' outputs): off, since on the fixture models it
    /// changed the drop by at most the evaluation noise at the cost of one forward pass per layer (docs/policy.md).
    /// </summary>
    public const bool GptqSequential = false;

    /// <summary>
    /// Uniform ranges clipped to the layer's input energy before compensating: off, since the clipped grids code
    /// to more bytes at the same width (flatter symbol histograms), which lost on LeNet-5 at 16x, while it won on
    /// the PP-OCR recognizer at 8x (docs/policy.md).
    /// </summary>
    public const bool GptqClip = false;

    /// <summary>The budget when the policy names none.</summary>
    public const double CompressionRatio = 8;

    /// <summary>The accuracy gate's allowance, in percentage points.</summary>
    public const double MaxDrop = 0.5;

    /// <summary>Candidate bit widths.</summary>
    public static IReadOnlyList<int> Bits { get; } = [2, 3, 4, 5, 6, 8];

    /// <summary>Tensors left in float32.</summary>
    public static IReadOnlyList<string> KeepFloat { get; } = ["*bias*"];
}
