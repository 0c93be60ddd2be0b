using System.Text.Json;
using QuantTasks.Compensation;
using QuantTasks.Diagnostics;
using QuantTasks.Policy;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// For <c>quantization.compensation: gptq</c> and <c>omega: output-error</c>: every quantized layer's input Hessian X X^T, from the float
/// model's activations on the first calibration samples (ONNX Runtime, streamed batch by batch). Label-free.
/// </summary>
internal sealed class ActivationsStage : PipelineStage
{
    public override string Name => "activations";

    public override double Share => 0.1;

    /// <summary>The policy's settings as the compensation takes them.</summary>
    public static CompensationOptions Options(GptqOptions gptq)
    {
        ArgumentNullException.ThrowIfNull(gptq);
        return new CompensationOptions(gptq.Dampening, gptq.Order switch
            {
                GptqOrder.DescendingDiagonal => ColumnOrder.DescendingHessianDiagonal,
                GptqOrder.Auto => ColumnOrder.Auto,
                _ => ColumnOrder.Natural,
            },
            Mask: gptq.Mask == GptqMask.Magnitude ? MaskSelection.Magnitude : MaskSelection.Saliency, ClipRanges: gptq.Clip);
    }

    public override void Run(ModelJob job, StageContext context)
    {
        var quantization = job.Policy.Quantization;
        if (quantization.Compensation == CompensationKind.None && !quantization.Omega.UsesLayerHessians())
        {
            job.LayerHessians = null;
            return;
        }

        var (key, what) = quantization.Compensation == CompensationKind.None
            ? ("omega", $"quantization.omega is {JsonNamingPolicy.KebabCaseLower.ConvertName(quantization.Omega.ToString())}")
            : ("compensation", "quantization.compensation is gptq");
        var calibration = job.Calibration ?? throw new QuantException(ErrorCode.PolicyMissingKey,
            $"{what}, which measures each layer's inputs on calibration samples: add data.calibration (an .npz file; labels are not needed), or turn it off.",
            job.Loaded.Locate("/quantization/" + key));
        var weights = job.Plans.Where(p => p.Quantized).Select(p => p.Weight).ToArray();
        var passes = SpillAsComputed(job, context, LayerHessians.Bytes(job.Model, weights));
        job.LayerHessians = LayerHessians.Compute(job.Model, weights, calibration, quantization.Gptq.Samples, passes: passes, cancellation: context.Cancellation);
    }

    /// <summary>
    /// Layer Hessians of at least this many bytes in all go to a scratch file in the output folder: the later stages
    /// use them one layer at a time, and holding them all was the largest share of a large network's memory
    /// (ResNet-50: 0.53 GB of a 2.2 GB peak, for a 0.1 GB model). They are computed in passes over the samples that
    /// hold at most this many bytes of sums each, every layer written out when its pass ends: the sums held at once
    /// had made the activations stage ResNet-50's peak. Smaller sets stay in memory and take one pass.
    /// </summary>
    internal static long SpillBytes { get; set; } = 128L << 20;

    private static HessianPasses? SpillAsComputed(ModelJob job, StageContext context, long bytes)
    {
        if (bytes < SpillBytes)
        {
            return null;
        }

        try
        {
            job.HessianSpill = new SpillFile(job.Pipeline.OutputDirectory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not an error: the Hessians stay in memory, as they would for a smaller network.
            StayInMemory(job, context, bytes, e);
            return null;
        }

        context.Note?.Invoke(FormattableString.Invariant(
            $"{job.Name}: the layer Hessians ({bytes / 1e6:F0} MB) are computed in passes of at most {SpillBytes / 1e6:F0} MB and wait in a scratch file in the output folder while the later stages use them one layer at a time"));
        var failed = false;
        return new HessianPasses(SpillBytes, hessian =>
        {
            if (failed)
            {
                return;
            }

            try
            {
                hessian.SpillTo(job.HessianSpill);
            }
            catch (IOException e)
            {
                // A full disk: what was not written stays in memory.
                failed = true;
                StayInMemory(job, context, bytes, e);
            }
        });
    }

    private static void StayInMemory(ModelJob job, StageContext context, long bytes, Exception e) =>
        context.Note?.Invoke(FormattableString.Invariant(
            $"{job.Name}: the layer Hessians ({bytes / 1e6:F0} MB) stay in memory: the scratch file in '{job.Pipeline.OutputDirectory}' could not be written ({e.Message})"));
}
