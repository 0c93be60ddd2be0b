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

        // Compensated tensors one at a time: each factorises its layer Hessian (two n x n float64 arrays while it
        // does, 340 MB for 4,608 columns), and the factorisation and the rounding are parallel inside.
        var compensated = job.Search.Tensors.Any(c => c.Compensation is not null);
        var options = new ParallelOptions { MaxDegreeOfParallelism = compensated ? 1 : Environment.ProcessorCount, CancellationToken = context.Cancellation };
        Parallel.For(0, tensors.Length, options, t =>
        {
            tensors[t] = MixedPrecisionSearch.Quantize(job.Search.Tensors[t], job.Values[t], settings);

            // The factorisation (n x n per layer) is not needed again unless the joint check moves this tensor.
            job.Search.Tensors[t].Compensation?.Hessian.ReleaseMemory();
        });
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
