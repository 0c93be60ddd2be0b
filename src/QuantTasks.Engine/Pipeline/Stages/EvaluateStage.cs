using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Evaluation;
using QuantTasks.Policy;
using QuantTasks.Reporting;
using QuantTasks.Runtime;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// The accuracy gate's measurement: the float model against the decoded blob, both in ONNX Runtime, on the
/// evaluation data. The verdict is applied after everything is written, so that CI can publish the report. Without
/// evaluation data nothing gates the model: the build warns (QT2002) and the report gives the compressed model's
/// fidelity to the float one on the calibration samples instead.
/// </summary>
internal sealed class EvaluateStage : PipelineStage
{
    public override string Name => "evaluate";

    public override double Share => 0.1;

    public override void Run(ModelJob job, StageContext context)
    {
        job.Accuracy = null;
        job.Fidelity = null;
        if (job.Policy.Data.Evaluation is { } evaluation)
        {
            var data = DataFile.Load(job.Loaded.Resolve(evaluation));
            InputChecks.RequireFinite(data);
            var (baseline, quantized) = Compare(job, data, context);
            InputChecks.RequireLabelsInRange(data, baseline.Classes);
            var options = job.Policy.Accuracy;
            var (metric, before, after) = Figure(options.Metric, Form(job), baseline, quantized, data.Labels());
            var drop = before - after;
            job.Accuracy = new AccuracyReport(metric, before, after, drop, options.MaxDrop, drop <= options.MaxDrop + 1e-9, baseline.Samples);
            return;
        }

        if (job.Policy.Data.Calibration is { } calibration)
        {
            var data = DataFile.Load(job.Loaded.Resolve(calibration));
            var (baseline, quantized) = Compare(job, data, context);
            var (metric, _, value) = LabelFree(job.Policy.Accuracy.Metric, Form(job), baseline, quantized);
            job.Fidelity = new FidelityReport(metric, value, baseline.Samples);
        }

        context.Note?.Invoke(ErrorCode.AccuracyUngated.Warning(job.Fidelity is { } f
            ? FormattableString.Invariant($"{job.Name}: no accuracy gate protects this model (the policy names no data.evaluation). On the {f.Samples} calibration samples its {f.Metric} with the float model is {f.Value:0.00}%. Add data.evaluation (labels optional) to gate the build.")
            : $"{job.Name}: no accuracy gate protects this model (the policy names no data.evaluation, nor calibration samples to measure it on). Add data.evaluation (labels optional) to gate the build.",
            job.Loaded.Path));
    }

    private static (ModelOutputs Baseline, ModelOutputs Quantized) Compare(ModelJob job, DataFile data, StageContext context)
    {
        var baseline = ModelEvaluator.Run(job.Model.ToBytes(), data, job.Options.Output, job.ModelPath);
        context.Cancellation.ThrowIfCancellationRequested();
        var quantized = ModelEvaluator.Run(QuantBlob.Read(job.Blob.Bytes).DecodeOnnxModel(), data, job.Options.Output, job.ModelPath);
        return (baseline, quantized);
    }

    /// <summary>The gate's figure for the float and the compressed model's outputs on the same samples.</summary>
    /// <param name="metric">The policy's metric.</param>
    /// <param name="form">What produces the output.</param>
    /// <param name="baseline">The float model's outputs.</param>
    /// <param name="quantized">The compressed model's outputs.</param>
    /// <param name="labels">The samples' labels, or null.</param>
    internal static (string Metric, double Before, double After) Figure(AccuracyMetric metric, OutputForm form, ModelOutputs baseline, ModelOutputs quantized, long[]? labels) =>
        // Labels fit outputs of one score vector per sample, whatever the graph declares.
        metric == AccuracyMetric.Top1 && labels is not null && (baseline.SampleShape?.Length ?? 1) == 1
            ? ("top1", ModelEvaluator.Top1(baseline, labels), ModelEvaluator.Top1(quantized, labels))
            : LabelFree(metric, form, baseline, quantized);

    internal static OutputForm Form(ModelJob job) =>
        OutputForm.Of(job.Model.Graph, job.Model.Opset, job.Options.Output ?? job.Model.Graph.Output[0].Name);

    // A graph that declares no output rank: one score vector per sample at run time is class scores, as OutputForm
    // takes a declared samples x classes output to be.
    private static ScoreKind KindOf(OutputForm form, ModelOutputs outputs) =>
        form.Kind == ScoreKind.Values && form.Rank == 0 && (outputs.SampleShape?.Length ?? 1) == 1 ? ScoreKind.Categorical : form.Kind;

    /// <summary>
    /// The figure without labels, following what produces the output (as the analysis's loss does): class scores
    /// agree or not per position along their class axis (per time step of a recognizer), a probability map per
    /// element at 0.5, and other values (regression, embeddings) by cosine. <c>cosine</c> is cosine whatever the output.
    /// </summary>
    private static (string Metric, double Before, double After) LabelFree(AccuracyMetric metric, OutputForm form, ModelOutputs baseline, ModelOutputs quantized)
    {
        var rank = baseline.SampleShape?.Length + 1 ?? 2;
        var axis = (int)(form.Axis < 0 ? form.Axis + rank : form.Axis) - 1;
        return (metric, KindOf(form, baseline)) switch
        {
            (AccuracyMetric.Cosine, _) or (AccuracyMetric.Top1, ScoreKind.Values) =>
                ("cosine", 100.0, ModelEvaluator.Cosine(baseline, quantized)),
            (_, ScoreKind.Categorical) when axis >= 0 && axis < rank - 1 =>
                ("agreement", 100.0, ModelEvaluator.Agreement(baseline, quantized, axis)),
            (_, ScoreKind.Binary) => ("agreement", 100.0, ModelEvaluator.BinaryAgreement(baseline, quantized)),
            _ => ("agreement", 100.0, ModelEvaluator.Agreement(baseline, quantized)),
        };
    }
}
