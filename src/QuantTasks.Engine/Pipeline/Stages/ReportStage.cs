using QuantTasks.Reporting;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>The model's report entry: sizes, ratio, bits per weight, accuracy, and a row per tensor.</summary>
internal sealed class ReportStage : PipelineStage
{
    public override string Name => "report";

    public override double Share => 0.02;

    public override void Run(ModelJob job, StageContext context)
    {
        var originalBytes = job.Weights.Sum(w => w.Params * 4);
        var totalParams = job.Weights.Sum(w => w.Params);
        var tensors = job.Search.Tensors.Select(c => new TensorReport(
            c.Weight.Name,
            c.Weight.Params,
            c.Bits ?? 32,
            c.Method,
            Math.Round(c.Sparsity, 6),
            c.Sensitivity,
            c.Bytes,
            c.Bits is not null && c.Plan.Axes.Length > 1 ? (c.ChannelAxis < 0 ? "per-tensor" : "per-channel") : null)).ToArray();
        var payload = job.Blob.PayloadBytes;
        job.Report = new ModelReport(
            job.Name,
            job.ModelPath,
            job.BlobPath,
            originalBytes,
            payload,
            payload == 0 ? 0 : (double)originalBytes / payload,
            totalParams == 0 ? 0 : payload * 8.0 / totalParams,
            0,
            false,
            job.Accuracy,
            tensors,
            job.Key,
            Finetune: job.Training,
            Fidelity: job.Fidelity,
            JointCheck: job.JointCheck);
    }
}
