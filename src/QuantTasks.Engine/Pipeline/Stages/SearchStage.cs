using System.Text.Json;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Policy;
using QuantTasks.Search;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// Chooses each tensor's candidate (bits, sparsity) under the budget: every candidate's Omega and exact coded
/// size, then the knapsack. Only choices come out; quantizing them is the next stage's.
/// </summary>
internal sealed class SearchStage : PipelineStage
{
    public override string Name => "search";

    public override double Share => 0.2;

    public override void Run(ModelJob job, StageContext context)
    {
        var policy = job.Policy;
        using var measured = MeasuredLossFor(job);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            job.Search = MixedPrecisionSearch.Choose(job.Plans, job.Values,
                new SearchInputs(policy.Quantization, policy.Pruning, policy.Encoding.Entropy == EntropyCoding.Huffman, job.Sensitivities, measured,
                    job.LayerHessians, policy.Quantization.Compensation == CompensationKind.Gptq ? ActivationsStage.Options(policy.Quantization.Gptq) : null),
                context.Progress, cancellation: context.Cancellation);
            if (measured is not null)
            {
                // The runs' own time beside the search's: with calibrated-output-error the search is mostly
                // compensation, and its time over the few measured candidates read as seconds per measurement.
                // No "error" before a colon: MSBuild reads "origin: ... error code: text" as an error.
                var (candidates, runSeconds) = measured.Throughput;
                var seconds = clock.Elapsed.TotalSeconds;
                var omega = JsonNamingPolicy.KebabCaseLower.ConvertName(policy.Quantization.Omega.ToString());
                context.Note?.Invoke(FormattableString.Invariant(
                    $"{job.Name}: {candidates} candidates measured for omega {omega} on {measured.Samples} calibration samples in {runSeconds:0.0} s of ONNX Runtime runs (summed over threads); search {seconds:0.0} s, {candidates / Math.Max(seconds, 1e-9):0.0} candidates per second"));
            }
        }
        catch (QuantException e) when (e.Location is null && e.Code is ErrorCode.BudgetInfeasible or ErrorCode.QuantizerNeedsHessian)
        {
            // The search knows no file; the setting to change is in the policy.
            var pointer = e.Code == ErrorCode.BudgetInfeasible ? "/quantization/budget"
                : policy.Quantization.Omega == OmegaKind.HessianDiagonal ? "/quantization/omega" : "/quantization/method";
            throw new QuantException(e.Code, $"Model {job.Name}: {e.Message}", job.Loaded.Locate(pointer), e);
        }
    }

    /// <summary>
    /// For <c>quantization.omega: measured</c> (every candidate) and <c>calibrated-output-error</c> (one candidate per
    /// tensor): the loss increase on the calibration samples, by ONNX Runtime. The calibration of output errors runs
    /// on the samples the layer Hessians were taken on, so that both sides of its ratio see the same data, and it
    /// measures the divergence from the float model even when the samples have labels: cross-entropy against labels
    /// can fall by chance when one tensor is rounded, and a near-zero measurement made that tensor's every candidate
    /// look free (MobileNet-style fixture at 8x: 8.95 pp lost with labels, 0.00 pp without).
    /// </summary>
    private static MeasuredLoss? MeasuredLossFor(ModelJob job)
    {
        var quantization = job.Policy.Quantization;
        if (!quantization.Omega.MeasuresLoss())
        {
            return null;
        }

        var calibration = job.Calibration ?? throw new QuantException(ErrorCode.PolicyMissingKey,
            $"quantization.omega is {System.Text.Json.JsonNamingPolicy.KebabCaseLower.ConvertName(quantization.Omega.ToString())}, which runs the model on calibration samples: add data.calibration (an .npz file), or use omega: sensitivity.",
            job.Loaded.Locate("/quantization/omega"));
        var calibrated = quantization.Omega == OmegaKind.CalibratedOutputError;
        return new MeasuredLoss(job.Model, calibrated ? calibration.Take(quantization.Gptq.Samples) : calibration, job.Options.Output,
            job.Plans.Where(p => p.Quantized).Select(p => p.Weight.Name), EvaluateStage.Form(job).MeasuredOn(job.Model.Graph, quantization.SoftmaxTemperature), labels: !calibrated);
    }
}
