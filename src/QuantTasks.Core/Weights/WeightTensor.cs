namespace QuantTasks.Weights;

/// <summary>Where a weight tensor is stored in the ONNX graph.</summary>
internal enum WeightStorage
{
    /// <summary>A graph initializer.</summary>
    Initializer,

    /// <summary>The <c>value</c> attribute of a <c>Constant</c> node.</summary>
    ConstantNode,
}

/// <summary>
/// One quantizable weight tensor: the weight operand of Conv, ConvTranspose or Gemm, a constant operand of
/// MatMul, or the table of Gather, of rank 2 or more, stored in an initializer or a <c>Constant</c> node.
/// </summary>
/// <param name="Name">The initializer's name or the <c>Constant</c> node's output name.</param>
/// <param name="Shape">The tensor's dimensions.</param>
/// <param name="Params">Number of elements.</param>
/// <param name="Bytes">Bytes the model stores for it (elements times the element size of its stored type).</param>
/// <param name="Op">The op type of the first node (in graph order) that consumes it as a weight.</param>
/// <param name="Storage">Where it is stored.</param>
/// <param name="DataType">The stored ONNX data type (1 float32, 10 float16, 11 double, 16 bfloat16).</param>
/// <param name="OutputChannelAxis">
/// The axis that indexes output channels for the consuming op, which per-channel quantization scales along:
/// 0 for Conv, 1 for ConvTranspose, 0 or 1 for Gemm by <c>transB</c>, the last for MatMul's right operand, 0
/// for a Gather table (one row per token).
/// </param>
internal sealed record WeightTensor(
    string Name,
    IReadOnlyList<long> Shape,
    long Params,
    long Bytes,
    string Op,
    WeightStorage Storage,
    int DataType,
    int OutputChannelAxis);
