using QuantTasks.Evaluation;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Reporting;
using QuantTasks.Search;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// Measures the search's combined result against the sum of losses it assumed, and lets the search correct itself
/// when the tensors' errors add up to more than that (<see cref="JointCheck"/>). Runs on the calibration samples by
/// ONNX Runtime; changes choices and quantized tensors only to ones the search weighed, so sizes stay exact.
/// </summary>
internal sealed class JointCheckStage : PipelineStage
{
    public override string Name => "joint-check";

    public override double Share => 0.1;

    public override void Run(ModelJob job, StageContext context)
    {
        job.JointCheck = null;
        var quantization = job.Policy.Quantization;
        var settings = quantization.JointCheck;
        var quantized = job.Search.Tensors.Where(c => c.Bits is not null).Select(c => c.Weight.Name).ToArray();
        if (!settings.Enabled || job.Calibration is not { } calibration || quantized.Length == 0)
        {
            return;
        }

        // With omega: measured the search's Omega is each tensor's loss increase alone on all calibration
        // samples: measured on the same samples, it is the assumed loss with no pass per tensor.
        var omegaIsLoss = quantization.Omega == OmegaKind.Measured;
        var samples = omegaIsLoss ? calibration : calibration.Take(settings.Samples);
        using var measured = new MeasuredLoss(job.Model, samples, job.Options.Output, quantized);
        var names = job.Weights.Select(w => w.Name).ToArray();
        var outcome = JointCheck.Run(job.Search, job.Values, job.Tensors, QuantizerSettings.From(quantization),
            replaced => measured.Increase(replaced.Select(r => (names[r.Tensor], r.Values)).ToArray()),
            omegaIsLoss, new JointCheckOptions(settings.Margin, settings.Rounds), context.Cancellation);

        job.Search = outcome.Search;
        job.Tensors = outcome.Stored;
        var report = outcome.Report;
        job.JointCheck = new JointCheckSummary(measured.Samples, report.Assumed, report.Measured, report.Final, report.Rounds, report.Passes, report.Moved);
        context.Note?.Invoke(FormattableString.Invariant(
            $"{job.Name}: joint check: assumed loss {report.Assumed:G4}, measured {report.Measured:G4}")
            + (report.Corrected
                ? FormattableString.Invariant($"; corrected to {report.Final:G4} ({string.Join(", ", report.Moved)} moved, {report.Passes} passes)")
                : FormattableString.Invariant($" ({report.Passes} passes)")));
    }
}
