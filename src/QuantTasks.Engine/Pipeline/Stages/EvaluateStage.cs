using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Policy;
using QuantTasks.Reporting;
using QuantTasks.Runtime;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// The accuracy gate's measurement: the float model against the decoded blob, both in ONNX Runtime, on the
/// evaluation data. The verdict is applied after everything is written, so that CI can publish the report.
/// </summary>
internal sealed class EvaluateStage : PipelineStage
{
    public override string Name => "evaluate";

    public override double Share => 0.1;

    public override void Run(ModelJob job, StageContext context)
    {
        if (job.Policy.Data.Evaluation is not { } evaluation)
        {
            job.Accuracy = null;
            return;
        }

        var data = DataFile.Load(job.Loaded.Resolve(evaluation));
        InputChecks.RequireFinite(data);
        var baseline = ModelEvaluator.Run(job.Model.ToBytes(), data, job.Options.Output, job.ModelPath);
        InputChecks.RequireLabelsInRange(data, baseline.Classes);
        context.Cancellation.ThrowIfCancellationRequested();
        var quantized = ModelEvaluator.Run(QuantBlob.Read(job.Blob.Bytes).DecodeOnnxModel(), data, job.Options.Output, job.ModelPath);
        var labels = data.Labels();
        var options = job.Policy.Accuracy;
        var (metric, before, after) = options.Metric switch
        {
            AccuracyMetric.Top1 when labels is not null =>
                ("top1", ModelEvaluator.Top1(baseline, labels), ModelEvaluator.Top1(quantized, labels)),
            AccuracyMetric.Cosine => ("cosine", 100.0, ModelEvaluator.Cosine(baseline, quantized)),
            _ => ("agreement", 100.0, ModelEvaluator.Agreement(baseline, quantized)),
        };
        var drop = before - after;
        job.Accuracy = new AccuracyReport(metric, before, after, drop, options.MaxDrop, drop <= options.MaxDrop + 1e-9, baseline.Samples);
    }
}
