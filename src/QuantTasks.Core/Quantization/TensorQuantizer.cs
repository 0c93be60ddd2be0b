using QuantTasks.Policy;

namespace QuantTasks.Quantization;

/// <summary>Settings shared by every tensor's quantizer; the defaults are the policy's.</summary>
/// <param name="SymmetricUniform">Uniform levels centred on zero.</param>
/// <param name="Ecsq">Which ECSQ algorithm.</param>
/// <param name="EcsqLambda">ECSQ's rate weight.</param>
/// <param name="Seed">k-means++ seed.</param>
internal sealed record QuantizerSettings(bool SymmetricUniform = false, EcsqAlgorithm Ecsq = EcsqAlgorithm.Iterative, double EcsqLambda = PolicyDefaults.EcsqLambda, long Seed = 0)
{
    /// <summary>The settings a policy asks for.</summary>
    public static QuantizerSettings From(QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new(options.Scheme == UniformScheme.Symmetric, options.Ecsq.Algorithm, options.Ecsq.Lambda, options.Seed);
    }
}

/// <summary>Helpers over every quantizer: quantizing by the policy's method name, and the reconstruction error.</summary>
internal static class TensorQuantizer
{
    /// <summary>Quantizes a prepared tensor at <paramref name="bits"/> by the registered method <paramref name="method"/>.</summary>
    public static QuantizedTensor Quantize(PreparedTensor tensor, string method, int bits, QuantizerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(settings);
        return QuantizerRegistry.Default.Get(method).Quantize(tensor, bits, settings);
    }

    /// <summary>Sum of squared differences between the tensor's reconstruction and its original values.</summary>
    public static double SquaredError(QuantizedTensor quantized, ReadOnlySpan<float> original) =>
        WeightedSquaredError(quantized, original, null);

    /// <summary>sum_i w_i (q_i - x_i)^2; unweighted when <paramref name="weights"/> is null.</summary>
    public static double WeightedSquaredError(QuantizedTensor quantized, ReadOnlySpan<float> original, float[]? weights)
    {
        ArgumentNullException.ThrowIfNull(quantized);
        var values = quantized.Dequantize();
        double sum = 0;
        for (var i = 0; i < values.Length; i++)
        {
            double d = values[i] - original[i];
            sum += weights is null ? d * d : weights[i] * d * d;
        }

        return sum;
    }
}
