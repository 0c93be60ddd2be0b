using QuantTasks.Blob;
using QuantTasks.Diagnostics;
using QuantTasks.Policy;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>Entropy-codes the stored tensors into the blob, and holds the size model to the byte.</summary>
internal sealed class EncodeStage : PipelineStage
{
    public override string Name => "encode";

    public override double Share => 0.05;

    public override void Run(ModelJob job, StageContext context)
    {
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["model"] = job.Name,
            ["source"] = Path.GetFileName(job.ModelPath),
            ["producer"] = "QuantTasks " + QuantizationPipeline.ToolVersion,
        };
        job.Blob = BlobWriter.Write(job.RefinedModel ?? job.Model, job.Tensors, job.Hash, metadata, job.Policy.Encoding.Entropy == EntropyCoding.Huffman);
        foreach (var choice in job.Search.Tensors)
        {
            // A refine stage may change values, never sizes: symbols and masks stay as the search sized them.
            if (job.Blob.TensorBytes[choice.Weight.Name] != choice.Bytes)
            {
                throw new QuantException(ErrorCode.Internal,
                    $"The size model predicted {choice.Bytes} bytes for tensor '{choice.Weight.Name}'; the blob holds {job.Blob.TensorBytes[choice.Weight.Name]}.");
            }
        }
    }
}
