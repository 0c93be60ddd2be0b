using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Search;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>Quantizes every tensor as the search chose (the same deterministic result the search measured).</summary>
internal sealed class QuantizeStage : PipelineStage
{
    public override string Name => "quantize";

    public override double Share => 0.05;

    public override void Run(ModelJob job, StageContext context)
    {
        var settings = QuantizerSettings.From(job.Policy.Quantization);
        var tensors = new Blob.StoredTensor[job.Search.Tensors.Count];
        Parallel.For(0, tensors.Length, new ParallelOptions { CancellationToken = context.Cancellation }, t =>
            tensors[t] = MixedPrecisionSearch.Quantize(job.Search.Tensors[t], job.Values[t], settings));
        job.Tensors = tensors;

        var quantization = job.Policy.Quantization;
        if (quantization.Compensation == CompensationKind.Gptq && quantization.Gptq.Sequential && job.Calibration is { } calibration)
        {
            var sequential = SequentialCompensation.Run(job.Model, job.Search, job.Values, tensors, calibration, quantization.Gptq.Samples, settings,
                job.Policy.Encoding.Entropy == EntropyCoding.Huffman, context.Cancellation);
            job.Search = sequential.Search;
            job.Tensors = sequential.Stored;
            context.Note?.Invoke($"sequential compensation: {sequential.Refined} layer(s) compensated again on the quantized layers' outputs");
        }
    }
}
