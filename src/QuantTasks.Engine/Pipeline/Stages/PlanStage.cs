using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Search;
using QuantTasks.Weights;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// Checks the model and the calibration data, finds the quantizable weights, and fixes each one's plan (float,
/// or its quantizer and candidate widths), which tells the analysis what to measure.
/// </summary>
internal sealed class PlanStage : PipelineStage
{
    public override string Name => "plan";

    public override double Share => 0.05;

    public override void Run(ModelJob job, StageContext context)
    {
        // No graph ONNX Runtime rejects, and no shape that does not fit, may reach the Hessian engine.
        job.Calibration = job.Policy.Data.Calibration is { } calibration ? DataFile.Load(job.Loaded.Resolve(calibration)) : null;
        InputChecks.RequireRunnable(job.Model.ToBytes(), job.Calibration, job.Options.Output, job.ModelPath);

        job.Weights = WeightCatalog.Find(job.Model);
        job.Values = job.Weights.Select(w => job.Model.ReadFloats(job.Model.FindTensor(w.Name)!)).ToArray();
        for (var i = 0; i < job.Weights.Count; i++)
        {
            InputChecks.RequireFinite(job.Values[i], job.Weights[i].Name, job.ModelPath);
        }

        try
        {
            job.Plans = TensorPlan.For(job.Weights, job.Policy.Quantization, job.Quantizers);
        }
        catch (QuantException e) when (e.Location is null)
        {
            throw new QuantException(e.Code, $"Model {job.Name}: {e.Message}", job.Loaded.Locate("/quantization/method"), e);
        }
    }
}
