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
        job.LayerHessians = LayerHessians.Compute(job.Model, weights, calibration, quantization.Gptq.Samples, cancellation: context.Cancellation);
    }
}
