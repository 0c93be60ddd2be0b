using QuantTasks.Policy;

namespace QuantTasks.Quantization;

/// <summary>Settings shared by every tensor's quantizer; the defaults are the policy's.</summary>
/// <param name="SymmetricUniform">Uniform levels centred on zero.</param>
/// <param name="Ecsq">Which ECSQ algorithm.</param>
/// <param name="EcsqLambda">ECSQ's rate weight.</param>
/// <param name="Seed">k-means++ seed.</param>
public sealed record QuantizerSettings(bool SymmetricUniform = false, EcsqAlgorithm Ecsq = EcsqAlgorithm.Iterative, double EcsqLambda = 0.005, long Seed = 0)
{
    /// <summary>The settings a policy asks for.</summary>
    public static QuantizerSettings From(QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new(options.Scheme == UniformScheme.Symmetric, options.Ecsq.Algorithm, options.Ecsq.Lambda, options.Seed);
    }
}

/// <summary>One entry point to every quantizer, by the policy's method name.</summary>
public static class TensorQuantizer
{
    /// <summary>Whether a method reconstructs with Hessian-weighted means when a diagonal is available.</summary>
    public static bool UsesHessianDiagonal(QuantizationMethod method) =>
        method is QuantizationMethod.HessianKmeans or QuantizationMethod.Ecsq;

    /// <summary>Quantizes a prepared tensor at <paramref name="bits"/> by <paramref name="method"/>.</summary>
    public static QuantizedTensor Quantize(PreparedTensor tensor, QuantizationMethod method, int bits, QuantizerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(settings);
        switch (method)
        {
            case QuantizationMethod.Uniform:
                return UniformQuantizer.Quantize(tensor.Name, tensor.PrunedValues(), tensor.Dims, bits, tensor.ChannelAxis,
                    settings.SymmetricUniform, zeroExact: tensor.PrunedCount > 0);
            case QuantizationMethod.Kmeans:
            case QuantizationMethod.HessianKmeans:
                return CodebookQuantizer.KMeans(tensor, bits, settings.Seed);
            default:
                return settings.Ecsq == EcsqAlgorithm.Uniform
                    ? CodebookQuantizer.EcsqUniform(tensor, bits)
                    : CodebookQuantizer.EcsqIterative(tensor, bits, settings.EcsqLambda);
        }
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
