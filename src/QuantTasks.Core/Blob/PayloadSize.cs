using QuantTasks.Coding;
using QuantTasks.Quantization;

namespace QuantTasks.Blob;

/// <summary>
/// The exact size model of the bit search: the bytes a tensor's payload takes in the blob (levels or codebooks,
/// code tables and the coded stream), computed from the symbols' histograms without encoding. The writer encodes
/// with the same plan and checks that it wrote exactly this many bytes.
/// </summary>
internal static class PayloadSize
{
    /// <summary>A quantized tensor's payload bytes.</summary>
    public static long Of(QuantizedTensor tensor, bool entropy)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return (tensor.Parameters.Length * 4L) + SymbolEncoder.Plan(tensor.Symbols, tensor.Bits, entropy).Bytes;
    }

    /// <summary>A tensor kept in float32.</summary>
    public static long KeptInFloat(long elements) => elements * 4;
}
