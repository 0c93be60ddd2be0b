using QuantTasks.Diagnostics;
using QuantTasks.Engine.Hessian;
using QuantTasks.Policy;
using QuantTasks.Progress;
using QuantTasks.Search;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// HAWQ's Hessian analysis of the quantized tensors: the trace (and the diagonal, when a quantizer or the Omega
/// weights by it) or the top eigenvalue. Nothing with sensitivity.method none or without calibration data.
/// </summary>
internal sealed class AnalyzeStage : PipelineStage
{
    public override string Name => "analyze";

    public override double Share => 0.4;

    public override void Run(ModelJob job, StageContext context)
    {
        var sensitivity = job.Policy.Sensitivity;
        var analyzed = job.Plans.Where(p => p.Quantized).Select(p => p.Weight).ToArray();
        if (sensitivity.Method == SensitivityMethod.None || job.Calibration is null || analyzed.Length == 0)
        {
            job.Sensitivities = null;
            return;
        }

        var needsDiagonal = TensorPlan.NeedDiagonal(job.Plans, job.Policy.Quantization.Omega);
        var method = sensitivity.Method == SensitivityMethod.Trace ? AnalysisMethod.Trace
            : needsDiagonal ? AnalysisMethod.Both : AnalysisMethod.Eigenvalue;
        var options = new AnalysisOptions(method, sensitivity.Loss, sensitivity.Samples, sensitivity.BatchSize,
            sensitivity.MaxIterations, sensitivity.Tolerance, sensitivity.Seed, sensitivity.Device, job.Options.Output, sensitivity.Sketch);
        var steps = method == AnalysisMethod.Both ? 2.0 : 1.0;

        // Progress arrives after every probe: the place to stop when the build is cancelled.
        var progress = new SynchronousProgress<EstimatorProgress>(p =>
        {
            context.Cancellation.ThrowIfCancellationRequested();
            context.Progress.Report((((p.Estimator == "eigenvalue" && steps == 2 ? 1 : 0) + ((double)p.Step / p.MaxSteps)) / steps));
        });
        SensitivityReport report;
        try
        {
            report = SensitivityAnalysis.Run(job.Model, analyzed, job.Calibration, options, progress, context.Note);
        }
        catch (QuantException e) when (e.Code == ErrorCode.SensitivityDegenerate)
        {
            // The setting to change is the policy's loss (or its calibration data).
            throw new QuantException(e.Code, $"Model {job.Name}: {e.Message}", job.Loaded.Locate("/sensitivity/loss"), e);
        }

        job.Sensitivities = report.Tensors.ToDictionary(
            t => t.Name,
            t => new TensorSensitivityInput(
                sensitivity.Method == SensitivityMethod.Eigenvalue ? t.TopEigenvalue!.Value / t.Params : t.Trace!.Value / t.Params,
                t.Diagonal),
            StringComparer.Ordinal);
    }
}
