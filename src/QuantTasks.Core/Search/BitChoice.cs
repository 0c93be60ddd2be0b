using QuantTasks.Policy;
using QuantTasks.Weights;

namespace QuantTasks.Search;

/// <summary>What the search decided for one weight tensor.</summary>
/// <param name="Weight">The tensor.</param>
/// <param name="Bits">Bits per symbol, or null to keep it in float32.</param>
/// <param name="Method">The quantizer.</param>
public sealed record TensorChoice(WeightTensor Weight, int? Bits, QuantizationMethod Method);

/// <summary>
/// One bit width for every tensor, from the budget alone: the largest candidate whose fixed-width size meets
/// it. <c>keep_float</c> and <c>overrides</c> apply on top. This is the plan when no sensitivities are known.
/// </summary>
public static class UniformBitChoice
{
    /// <summary>The choice for each weight of a model.</summary>
    public static IReadOnlyList<TensorChoice> Choose(QuantizationOptions options, IReadOnlyList<WeightTensor> weights)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(weights);
        var bits = UniformBits(options, weights.Sum(w => w.Params));
        return weights.Select(w => Apply(options, w, bits)).ToArray();
    }

    /// <summary>The choice for one tensor given a default bit width: keep_float first, then the first matching override.</summary>
    public static TensorChoice Apply(QuantizationOptions options, WeightTensor weight, int bits)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(weight);
        if (options.KeepFloat.Any(p => Glob.IsMatch(p, weight.Name)))
        {
            return new TensorChoice(weight, null, options.Method);
        }

        var match = options.Overrides.FirstOrDefault(o => Glob.IsMatch(o.Match, weight.Name));
        return new TensorChoice(weight, match?.Bits ?? bits, match?.Method ?? options.Method);
    }

    private static int UniformBits(QuantizationOptions options, long parameters)
    {
        var candidates = options.Bits.Order().ToArray();
        var budget = options.Budget;
        double limit = budget.AverageBits
            ?? (budget.CompressionRatio is { } ratio ? 32.0 / ratio
            : budget.MaxSize is { } size && parameters > 0 ? size.Bytes * 8.0 / parameters
            : candidates[^1]);
        var fitting = candidates.Where(b => b <= limit + 1e-9).ToArray();
        return fitting.Length > 0 ? fitting[^1] : candidates[0];
    }
}
