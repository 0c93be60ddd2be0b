using QuantTasks.Quantization;

namespace QuantTasks.Blob;

/// <summary>A weight tensor as the blob will store it: quantized, or kept in float32.</summary>
internal sealed class StoredTensor
{
    private StoredTensor(string name, long[] dims, int elementType, QuantizedTensor? quantized, float[]? values)
    {
        Name = name;
        Dims = dims;
        ElementType = elementType;
        Quantized = quantized;
        FloatValues = values;
    }

    /// <summary>The initializer's name in the decoded model.</summary>
    public string Name { get; }

    /// <summary>The dimensions.</summary>
    public IReadOnlyList<long> Dims { get; }

    /// <summary>The ONNX data type the decoded initializer has (the source model's type).</summary>
    public int ElementType { get; }

    /// <summary>The quantized form, or null for a tensor kept in float.</summary>
    public QuantizedTensor? Quantized { get; }

    /// <summary>The float values of a tensor kept in float, or null.</summary>
    public float[]? FloatValues { get; }

    /// <summary>A quantized tensor.</summary>
    public static StoredTensor Of(QuantizedTensor quantized, int elementType)
    {
        ArgumentNullException.ThrowIfNull(quantized);
        return new(quantized.Name, quantized.Dims.ToArray(), elementType, quantized, null);
    }

    /// <summary>A tensor kept in float32.</summary>
    public static StoredTensor KeptInFloat(string name, IReadOnlyList<long> dims, int elementType, float[] values) =>
        new(name, dims.ToArray(), elementType, null, values);
}
