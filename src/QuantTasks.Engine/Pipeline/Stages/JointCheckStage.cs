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
/// When the policy gates the build, a result whose losses add up but that the gate's metric and limit would refuse on
/// the calibration samples is corrected too; the evaluation samples are left to the gate.
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
        // samples: measured on the same samples, it is the assumed loss with no pass per tensor. With
        // calibrated-output-error it is each tensor's loss estimated in the units of one measurement per tensor
        // (the mean divergence from the float model): measured the same way, on the check's own samples, the
        // check compares the joint loss with the sum the search minimised, and a pass per tensor is saved unless the
        // gate calls for a correction the sum did not (then each tensor is measured alone, to pick the ones to correct).
        var omegaIsLoss = quantization.Omega is OmegaKind.Measured or OmegaKind.CalibratedOutputError;
        var calibrated = quantization.Omega == OmegaKind.CalibratedOutputError;
        var needed = (omegaIsLoss ? 0 : quantized.Length) + 1;
        if (needed > settings.MaxPasses)
        {
            context.Note?.Invoke(FormattableString.Invariant(
                $"{job.Name}: joint check skipped: measuring {quantized.Length} tensors alone and together takes {needed} forward passes, more than quantization.joint_check.max_passes ({settings.MaxPasses})"));
            return;
        }

        var samples = omegaIsLoss && !calibrated ? calibration : calibration.Take(settings.Samples);
        var outputForm = EvaluateStage.Form(job);
        var form = outputForm.MeasuredOn(job.Model.Graph, quantization.SoftmaxTemperature);
        using var measured = new MeasuredLoss(job.Model, samples, job.Options.Output, quantized, form, labels: !calibrated);
        var names = job.Weights.Select(w => w.Name).ToArray();
        (string, float[])[] Named(IReadOnlyList<(int Tensor, float[] Values)> replaced) => replaced.Select(r => (names[r.Tensor], r.Values)).ToArray();

        // The gate's own figure (its metric and limit) on the same calibration samples, so that a result the gate
        // would refuse is corrected while the search's candidates can still do better. The evaluation samples stay
        // the gate's alone: a correction steered by them would be judged by them, and the gate would no longer say
        // how the result does on samples it was not fitted to. Not before fine-tuning, which corrects it otherwise.
        // The gate is asked about the starting result and each kept round's (at most rounds + 1 times) and takes a
        // forward pass of its own; every other measurement sums its loss batch by batch and keeps no outputs. Keeping
        // each full set's outputs for a question that may follow cost the recognizer 68 MB per candidate measured in
        // context, garbage that piled up faster than the collector returned it.
        Func<IReadOnlyList<(int Tensor, float[] Values)>, bool>? gateFails = null;
        if (job.Policy.Data.Evaluation is not null && job.Policy.Finetune is null)
        {
            // The plan stage checked these labels against the model's classes already.
            var labels = samples.Labels();
            gateFails = replaced =>
            {
                var (_, before, after) = EvaluateStage.Figure(job.Policy.Accuracy.Metric, outputForm, measured.Reference, measured.Outputs(Named(replaced)), labels);
                return before - after > job.Policy.Accuracy.MaxDrop + 1e-9;
            };
        }

        double Measure(IReadOnlyList<(int Tensor, float[] Values)> replaced) => measured.Increase(Named(replaced));

        var outcome = JointCheck.Run(job.Search, job.Values, job.Tensors, QuantizerSettings.From(quantization), Measure,
            omegaIsLoss, new JointCheckOptions(settings.Margin, settings.Rounds, MaxPasses: settings.MaxPasses), gateFails,
            measureAloneToCorrect: calibrated, context.Cancellation);

        job.Search = outcome.Search;
        job.Tensors = outcome.Stored;
        var report = outcome.Report;
        job.JointCheck = new JointCheckSummary(measured.Samples, report.Assumed, report.Measured, report.Final, report.Rounds, report.Passes, report.Moved, report.Trigger,
            calibrated ? "calibrated" : omegaIsLoss ? "measured" : "alone");
        context.Note?.Invoke(FormattableString.Invariant(
            $"{job.Name}: joint check: assumed loss {report.Assumed:G4}, measured {report.Measured:G4}")
            + (report.Corrected
                ? FormattableString.Invariant($"; corrected to {report.Final:G4} ({string.Join(", ", report.Moved)} moved, {report.Passes} passes)")
                : FormattableString.Invariant($" ({report.Passes} passes)")));
    }
}
