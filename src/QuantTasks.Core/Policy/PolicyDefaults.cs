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

    /// <summary>
    /// Hutch++'s sketch rank for the trace: on LeNet-5 it cut the trace's error at 48 Hessian-vector products from
    /// 19.8% to 0.9% (HutchPlusPlusTests), and the seed-to-seed spread on the BN-folded ResNet from 9-115% to 1-17%.
    /// </summary>
    public const int Sketch = 16;

    /// <summary>ECSQ's rate weight.</summary>
    public const double EcsqLambda = 0.005;

    /// <summary>GPTQ's dampening: a fraction of the mean diagonal of the layer Hessian.</summary>
    public const double GptqDampening = 0.01;

    /// <summary>
    /// GPTQ's column order: descending-diagonal (act order). Against natural order, with init's policy, it lowered
    /// the KL from the float model on held-out samples on 5 of 10 fixture runs and on the PP-OCR recognizer (output
    /// cosine 0.9940 to 0.9963), raised it on 3 and tied on 2, 9% lower in geometric mean (docs/policy.md).
    /// </summary>
    public const GptqOrder GptqOrder = Policy.GptqOrder.DescendingDiagonal;

    /// <summary>
    /// Calibration samples whose activations make the layer Hessians: 512, since with per-tensor grids among the
    /// candidates 128 left the MLP at 16x on the 0.5 pp gate (0.50) where 512 gave 0.15 (docs/policy.md). The cost
    /// is linear in samples and bounded by the calibration file's rows.
    /// </summary>
    public const int GptqSamples = 512;

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

    /// <summary>The joint check is on: it costs a forward pass per quantized tensor and one more, and corrects only when needed.</summary>
    public const bool JointCheck = true;

    /// <summary>
    /// The joint check's margin: the combined loss may exceed the summed per-tensor losses by a quarter before the
    /// search corrects itself (interactions of that size were seen on every fixture whose choice was sound).
    /// </summary>
    public const double JointCheckMargin = 0.25;

    /// <summary>
    /// A Softmax output's class distributions are compared at temperature 2 in the measured losses, as distillation
    /// softens its teacher: at 1, outputs the model is sure of (every calibration image of the PP-OCR direction
    /// classifier, most of the recognizer's time steps) show almost nothing of how far their logits moved. Measured
    /// at 8x with init's policy on the two Softmax models (docs/policy.md): against 1, temperature 2 lowered the
    /// classifier's mean probability error on held-out and test images (0.0057 -> 0.0032, 0.0067 -> 0.0049) and
    /// raised the recognizer's agreement (98.97% -> 99.07% held out, 98.98% -> 99.10% on test lines) at the same or
    /// a higher cosine; 3 and 4 lost on the recognizer. Logit outputs, Sigmoid maps and values are not affected.
    /// </summary>
    public const double SoftmaxTemperature = 2;

    /// <summary>The joint check's most correction rounds.</summary>
    public const int JointCheckRounds = 2;

    /// <summary>
    /// The joint check's most forward passes: its cost is bounded whatever the model. Each pass costs a forward pass
    /// over its samples; on the PP-OCR recognizer (47 tensors, 64 lines of 48 x 320) one took about 2 s on one core,
    /// and the check with no bound took more than 7 minutes. 100 covers the fixtures' corrections (78 passes on the
    /// MobileNet-style model) and a measurement with one correction round on models of up to about 45 tensors.
    /// </summary>
    public const int JointCheckMaxPasses = 100;

    /// <summary>Calibration samples of the joint check's forward passes.</summary>
    public const int JointCheckSamples = 128;

    /// <summary>The budget when the policy names none.</summary>
    public const double CompressionRatio = 8;

    /// <summary>The accuracy gate's allowance, in percentage points.</summary>
    public const double MaxDrop = 0.5;

    /// <summary>Fine-tuning's passes over the training samples.</summary>
    public const int FinetuneEpochs = 10;

    /// <summary>Fine-tuning's samples per step.</summary>
    public const int FinetuneBatchSize = 64;

    /// <summary>Fine-tuning's first learning rate (Adam's usual one).</summary>
    public const double FinetuneLearningRate = 0.001;

    /// <summary>Momentum of fine-tuning with SGD.</summary>
    public const double FinetuneMomentum = 0.9;

    /// <summary>Distillation's temperature: softens the float model's outputs so that its second choices teach too.</summary>
    public const double FinetuneTemperature = 2;

    /// <summary>Weight of cross-entropy against distillation in a mixed loss.</summary>
    public const double FinetuneAlpha = 0.5;

    /// <summary>Fraction of the training samples held out for early stopping.</summary>
    public const double FinetuneValidation = 0.1;

    /// <summary>Epochs without progress on the held-out samples before fine-tuning stops.</summary>
    public const int FinetunePatience = 3;

    /// <summary>Unfreezing stages of HAWQ's order.</summary>
    public const int FinetuneStages = 3;

    /// <summary>Candidate bit widths.</summary>
    public static IReadOnlyList<int> Bits { get; } = [2, 3, 4, 5, 6, 8];

    /// <summary>Tensors left in float32.</summary>
    public static IReadOnlyList<string> KeepFloat { get; } = ["*bias*"];
}
