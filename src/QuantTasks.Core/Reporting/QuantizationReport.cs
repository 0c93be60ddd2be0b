using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace QuantTasks.Reporting;

/// <summary>One tensor's line in the report.</summary>
/// <param name="Name">Weight name.</param>
/// <param name="Params">Elements.</param>
/// <param name="Bits">Bits per symbol, or 32 when kept in float.</param>
/// <param name="Method">uniform, kmeans, hessian-kmeans, ecsq, or float.</param>
/// <param name="Sparsity">Fraction pruned to zero.</param>
/// <param name="Sensitivity">What the bit search used.</param>
/// <param name="Bytes">Bytes in the blob.</param>
/// <param name="Grid">per-channel or per-tensor, given when the search chose it (<c>granularity: auto</c>); null otherwise.</param>
internal sealed record TensorReport(string Name, long Params, int Bits, string Method, double Sparsity, double Sensitivity, long Bytes, string? Grid = null);

/// <summary>The accuracy gate's figures (percentages, drop in percentage points).</summary>
/// <param name="Metric">top1, agreement or cosine.</param>
/// <param name="Baseline">The float model.</param>
/// <param name="Quantized">The decoded quantized model.</param>
/// <param name="Drop">Baseline minus quantized.</param>
/// <param name="MaxDrop">The policy's limit.</param>
/// <param name="Passed">Whether the drop is within the limit.</param>
/// <param name="Samples">Evaluation samples.</param>
internal sealed record AccuracyReport(string Metric, double Baseline, double Quantized, double Drop, double MaxDrop, bool Passed, int Samples);

/// <summary>
/// How closely the compressed model follows the float one on the calibration samples, for a policy without
/// evaluation data: no gate judges it, but the report says what it is.
/// </summary>
/// <param name="Metric">agreement (the same class, per position along the class axis), or cosine.</param>
/// <param name="Value">The figure, in percent.</param>
/// <param name="Samples">Calibration samples measured.</param>
internal sealed record FidelityReport(string Metric, double Value, int Samples);

/// <summary>One epoch of fine-tuning.</summary>
/// <param name="Epoch">1 for the first pass; 0 is the quantized model before any step.</param>
/// <param name="Phase">qat (float weights, quantization-aware) or shared (the levels of the final symbols).</param>
/// <param name="Stage">The unfreezing stage (always 1 in joint order).</param>
/// <param name="LearningRate">The epoch's learning rate (0 for epoch 0).</param>
/// <param name="TrainingLoss">Mean loss over the epoch's steps (null for epoch 0).</param>
/// <param name="HeldOutLoss">Mean loss on the held-out samples after the epoch, or null without them.</param>
/// <param name="HeldOutAccuracy">Top-1 (labels) or agreement with the float model, in percent, on the held-out samples; null when it has no meaning.</param>
internal sealed record EpochReport(int Epoch, string Phase, int Stage, double LearningRate, double? TrainingLoss, double? HeldOutLoss, double? HeldOutAccuracy);

/// <summary>What fine-tuning did: the training curve and the epoch whose values the blob keeps.</summary>
/// <param name="Loss">cross-entropy, distillation or mixed.</param>
/// <param name="Metric">top1, agreement, or null (values compared by squared error).</param>
/// <param name="TrainingSamples">Samples the optimizer saw each epoch.</param>
/// <param name="HeldOutSamples">Samples held out.</param>
/// <param name="BestEpoch">The epoch kept (lowest held-out loss; the last without held-out samples; 0 when no epoch improved on the quantized model).</param>
/// <param name="StoppedEarly">Whether patience ran out before the last epoch.</param>
/// <param name="Seconds">Wall time of the training.</param>
/// <param name="Parameters">Trained values: shared levels, scales and offsets, float tensors.</param>
/// <param name="Epochs">The curve, from epoch 0.</param>
internal sealed record TrainingReport(string Loss, string? Metric, int TrainingSamples, int HeldOutSamples, int BestEpoch, bool StoppedEarly,
    double Seconds, long Parameters, IReadOnlyList<EpochReport> Epochs);

/// <summary>The joint check: the loss the search assumed against the loss measured with every tensor quantized.</summary>
/// <param name="Samples">Calibration samples of the forward passes.</param>
/// <param name="AssumedLoss">
/// The sum of each chosen tensor's own loss increase: measured alone, or the search's Omega where that is the loss
/// (<c>omega: measured</c>) or estimates it in the check's units (<c>calibrated-output-error</c>: the divergence from the float model).
/// </param>
/// <param name="MeasuredLoss">The search's result's loss increase, every tensor quantized at once.</param>
/// <param name="FinalLoss">The loss increase of what was kept (the measured one when nothing moved).</param>
/// <param name="Rounds">Correction rounds run.</param>
/// <param name="Passes">Forward passes the check took.</param>
/// <param name="Moved">Tensors whose choice the correction changed.</param>
/// <param name="Trigger">margin (the joint loss exceeded the sum), gate (the accuracy gate would have failed), or null when the check passed.</param>
/// <param name="AssumedFrom">
/// Where each tensor's own loss came from: alone (measured alone), measured (the search's Omega, a measured loss)
/// or calibrated (the search's calibrated output error, an estimate).
/// </param>
internal sealed record JointCheckSummary(int Samples, double AssumedLoss, double MeasuredLoss, double FinalLoss, int Rounds, int Passes, IReadOnlyList<string> Moved,
    string? Trigger = null, string AssumedFrom = "alone");

/// <summary>One model's result, as <c>report.json</c> lists it (the product contract's keys).</summary>
/// <param name="Name">The model's name (class name without "Model").</param>
/// <param name="Source">The ONNX file.</param>
/// <param name="Blob">The blob written.</param>
/// <param name="OriginalBytes">Float32 bytes of the weights.</param>
/// <param name="CompressedBytes">Blob payload bytes (codebooks and tables included).</param>
/// <param name="CompressionRatio">OriginalBytes / CompressedBytes.</param>
/// <param name="AverageBits">Coded bits per weight.</param>
/// <param name="Seconds">Wall time of this model's pipeline.</param>
/// <param name="CacheHit">Whether the result came from the cache.</param>
/// <param name="Accuracy">The gate's figures, when evaluation data is given.</param>
/// <param name="Tensors">Per tensor.</param>
/// <param name="ContentHash">Hex SHA-256 of the inputs.</param>
/// <param name="Stages">Seconds per pipeline stage (load, analyze, search, encode, evaluate, generate; "cache hit" when cached).</param>
/// <param name="Finetune">The fine-tuning curve, when the policy fine-tunes.</param>
/// <param name="Fidelity">Without evaluation data: the compressed model against the float one on the calibration samples.</param>
/// <param name="JointCheck">The joint check after the search, when it ran.</param>
internal sealed record ModelReport(
    string Name,
    string Source,
    string Blob,
    long OriginalBytes,
    long CompressedBytes,
    double CompressionRatio,
    double AverageBits,
    double Seconds,
    bool CacheHit,
    AccuracyReport? Accuracy,
    IReadOnlyList<TensorReport> Tensors,
    string ContentHash,
    IReadOnlyDictionary<string, double>? Stages = null,
    TrainingReport? Finetune = null,
    FidelityReport? Fidelity = null,
    JointCheckSummary? JointCheck = null);

/// <summary><c>report.json</c> and <c>report.md</c>.</summary>
/// <param name="Models">Every model of the policy.</param>
internal sealed record QuantizationReport(IReadOnlyList<ModelReport> Models)
{
    /// <summary>snake_case, indented; nulls left out.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = true,
    };

    /// <summary>The report as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>The report as Markdown, for people and CI job summaries.</summary>
    public string ToMarkdown()
    {
        var text = new StringBuilder();
        void Line(string line = "") => text.Append(line).Append('\n');
        Line("# QuantTasks report");
        Line();
        Line("![Bits and sensitivity per tensor](report.svg)");
        foreach (var model in Models)
        {
            Line();
            Line($"## {model.Name}");
            Line();
            Line(Invariant($"`{model.Source}`: {model.OriginalBytes:N0} bytes of float32 weights in {model.CompressedBytes:N0} bytes, **{model.CompressionRatio:0.0}x** ({model.AverageBits:0.00} bits per weight){(model.CacheHit ? ", from the cache" : "")}."));
            if (model.Accuracy is { } a)
            {
                Line();
                Line(Invariant($"Accuracy ({a.Metric}, {a.Samples} samples): float {a.Baseline:0.00}%, quantized {a.Quantized:0.00}%, drop {a.Drop:0.00} pp (limit {a.MaxDrop:0.00} pp): **{(a.Passed ? "passed" : "FAILED")}**."));
            }
            else if (!model.CacheHit || model.Fidelity is not null)
            {
                Line();
                Line(model.Fidelity is { } fidelity
                    ? Invariant($"**No accuracy gate** (the policy names no `data.evaluation`). On the {fidelity.Samples} calibration samples the compressed model's {fidelity.Metric} with the float model is {fidelity.Value:0.00}%.")
                    : "**No accuracy gate** (the policy names no `data.evaluation`), and no calibration samples to measure fidelity on.");
            }

            if (model.JointCheck is { } j)
            {
                Line();
                Line(Invariant($"Joint check on {j.Samples} calibration samples: the search assumed a loss increase of {j.AssumedLoss:G4} ({AssumedFrom(j.AssumedFrom)}), all tensors at once measured {j.MeasuredLoss:G4}")
                    + (j.Trigger == "gate" ? "; the sum held, but the accuracy gate would have failed" : "")
                    + (j.Moved.Count == 0
                        ? Invariant($"{(j.Rounds > 0 ? $"; {j.Rounds} correction round(s) found nothing better" : "")}.")
                        : Invariant($"; corrected in {j.Rounds} round(s) to {j.FinalLoss:G4} by moving {string.Join(", ", j.Moved.Select(m => $"`{m}`"))}.")));
            }

            if (model.Finetune is { } f)
            {
                Line();
                Line(Invariant($"Fine-tuned ({f.Loss}) on {f.TrainingSamples:N0} samples with {f.HeldOutSamples:N0} held out, {f.Parameters:N0} trained values, {f.Seconds:0.0} s; kept epoch {f.BestEpoch}{(f.StoppedEarly ? ", stopped early" : "")}."));
                Line();
                Line($"| epoch | phase | stage | learning rate | training loss | held-out loss | held-out {f.Metric ?? "accuracy"} |");
                Line("|---:|---|---:|---:|---:|---:|---:|");
                foreach (var e in f.Epochs)
                {
                    Line(Invariant($"| {e.Epoch} | {e.Phase} | {e.Stage} | {e.LearningRate:G3} | {Figure(e.TrainingLoss, "0.0000")} | {Figure(e.HeldOutLoss, "0.0000")} | {Figure(e.HeldOutAccuracy, "0.00")} |"));
                }
            }

            if (model.Stages is { Count: > 0 } stages)
            {
                Line();
                Line("Time per stage: " + string.Join(", ", stages.Select(s => Invariant($"{s.Key} {s.Value:0.00} s"))) + ".");
            }

            Line();
            // The grid column only when the search chose grids, so that pinned policies keep their report.
            var grids = model.Tensors.Any(t => t.Grid is not null);
            Line(grids
                ? "| tensor | params | bits | method | grid | sparsity | sensitivity | bytes |"
                : "| tensor | params | bits | method | sparsity | sensitivity | bytes |");
            Line(grids ? "|---|---:|---:|---|---|---:|---:|---:|" : "|---|---:|---:|---|---:|---:|---:|");
            foreach (var t in model.Tensors)
            {
                var grid = grids ? " " + (t.Grid ?? "-") + " |" : "";
                Line(Invariant($"| `{t.Name}` | {t.Params:N0} | {t.Bits} | {t.Method} |{grid} {t.Sparsity:0.00} | {t.Sensitivity:G4} | {t.Bytes:N0} |"));
            }
        }

        return text.ToString();
    }

    private static string Figure(double? value, string format) =>
        value is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private static string AssumedFrom(string source) => source switch
    {
        "measured" => "each tensor's measured Omega, summed",
        "calibrated" => "each tensor's calibrated output error, an estimate of its loss alone, summed",
        _ => "each tensor alone, summed",
    };
}
