using QuantTasks.Diagnostics;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Weights;

namespace QuantTasks.Search;

/// <summary>
/// What the policy fixes for one tensor before anything is measured: kept in float32 (no quantizer), or its
/// quantizer and candidate bit widths (<c>keep_float</c>, then the first matching override, then the defaults).
/// The analysis reads the plans to know which tensors to analyse and whether the Hessian diagonal is needed.
/// </summary>
/// <param name="Weight">The tensor.</param>
/// <param name="Quantizer">Its method, or null when it stays in float32.</param>
/// <param name="Bits">Candidate widths, ascending; empty for a float tensor.</param>
internal sealed record TensorPlan(WeightTensor Weight, Quantizer? Quantizer, int[] Bits)
{
    /// <summary>Whether the tensor is quantized at all.</summary>
    public bool Quantized => Quantizer is not null;

    /// <summary>Every tensor's plan, in catalog order.</summary>
    /// <exception cref="QuantException">A method the registry does not implement.</exception>
    public static TensorPlan[] For(IReadOnlyList<WeightTensor> weights, QuantizationOptions options, QuantizerRegistry registry)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(registry);
        return weights.Select(weight =>
        {
            if (options.KeepFloat.Any(p => Glob.IsMatch(p, weight.Name)))
            {
                return new TensorPlan(weight, null, []);
            }

            var match = options.Overrides.FirstOrDefault(o => Glob.IsMatch(o.Match, weight.Name));
            var bits = match?.Bits is { } fixedBits ? [fixedBits] : options.Bits.Distinct().Order().ToArray();
            return new TensorPlan(weight, registry.Get(match?.Method ?? options.Method), bits);
        }).ToArray();
    }

    /// <summary>Whether any plan (or the Omega) uses the Hessian diagonal, which only the trace analysis estimates.</summary>
    public static bool NeedDiagonal(IEnumerable<TensorPlan> plans, OmegaKind omega) =>
        omega == OmegaKind.HessianDiagonal || plans.Any(p => p.Quantizer?.UsesHessianDiagonal == true);
}
