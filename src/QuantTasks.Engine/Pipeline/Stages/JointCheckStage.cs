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
        var form = outputForm.MeasuredOn(job.Model.Graph);
        using var measured = new MeasuredLoss(job.Model, samples, job.Options.Output, quantized, form, labels: !calibrated);
        var names = job.Weights.Select(w => w.Name).ToArray();
        (string, float[])[] Named(IReadOnlyList<(int Tensor, float[] Values)> replaced) => replaced.Select(r => (names[r.Tensor], r.Values)).ToArray();

        // The gate's own figure (its metric and limit) on the same calibration samples, so that a result the gate
        // would refuse is corrected while the search's candidates can still do better. The evaluation samples stay
        // the gate's alone: a correction steered by them would be judged by them, and the gate would no longer say
        // how the result does on samples it was not fitted to. Not before fine-tuning, which corrects it otherwise.
        // The check asks the gate about the set of values it has just measured, on the same samples: the outputs of
        // the last measurement are kept so that the gate's figure costs no second forward pass.
        var last = new LastMeasurement();
        Func<IReadOnlyList<(int Tensor, float[] Values)>, bool>? gateFails = null;
        if (job.Policy.Data.Evaluation is not null && job.Policy.Finetune is null)
        {
            // The plan stage checked these labels against the model's classes already.
            var labels = samples.Labels();
            gateFails = replaced =>
            {
                var outputs = last.Of(replaced) ?? measured.Outputs(Named(replaced));
                var (_, before, after) = EvaluateStage.Figure(job.Policy.Accuracy.Metric, outputForm, measured.Reference, outputs, labels);
                return before - after > job.Policy.Accuracy.MaxDrop + 1e-9;
            };
        }

        // Only a set that replaces every quantized tensor can be a result the gate is asked about: the others (each
        // tensor alone, all but one) sum their loss batch by batch and keep no outputs (the recognizer's are 68 MB).
        double Measure(IReadOnlyList<(int Tensor, float[] Values)> replaced)
        {
            if (gateFails is null || replaced.Count < quantized.Length)
            {
                return measured.Increase(Named(replaced));
            }

            var outputs = measured.Outputs(Named(replaced));
            last.Keep(replaced, outputs);
            return measured.Increase(outputs);
        }

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

    /// <summary>The outputs of the most recent measurement, with the values it replaced (measurements run in parallel).</summary>
    private sealed class LastMeasurement
    {
        private readonly Lock _lock = new();
        private IReadOnlyList<(int Tensor, float[] Values)>? _replaced;
        private ModelOutputs? _outputs;

        public void Keep(IReadOnlyList<(int Tensor, float[] Values)> replaced, ModelOutputs outputs)
        {
            lock (_lock)
            {
                (_replaced, _outputs) = (replaced, outputs);
            }
        }

        /// <summary>The kept outputs when <paramref name="replaced"/> holds the same tensors and the same arrays, else null.</summary>
        public ModelOutputs? Of(IReadOnlyList<(int Tensor, float[] Values)> replaced)
        {
            lock (_lock)
            {
                return _replaced is { } kept && kept.Count == replaced.Count
                    && kept.Zip(replaced).All(p => p.First.Tensor == p.Second.Tensor && ReferenceEquals(p.First.Values, p.Second.Values))
                    ? _outputs
                    : null;
            }
        }
    }
}
