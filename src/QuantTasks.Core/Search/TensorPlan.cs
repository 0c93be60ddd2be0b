using QuantTasks.Diagnostics;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Weights;

namespace QuantTasks.Search;

/// <summary>
/// What the policy fixes for one tensor before anything is measured: kept in float32 (no quantizer), or the
/// quantizers, grids and bit widths its candidates span (<c>keep_float</c>, then the first matching override, then
/// the defaults). <c>method: auto</c> and <c>granularity: auto</c> let the search pick per tensor among uniform and
/// ECSQ levels, per channel and per tensor. The analysis reads the plans to know which tensors to analyse and
/// whether the Hessian diagonal is needed.
/// </summary>
/// <param name="Weight">The tensor.</param>
/// <param name="Methods">Its candidate quantizers; empty when it stays in float32.</param>
/// <param name="Bits">Candidate widths, ascending; empty for a float tensor.</param>
/// <param name="Axes">Candidate channel axes (-1: one grid for the whole tensor); empty for a float tensor.</param>
internal sealed record TensorPlan(WeightTensor Weight, IReadOnlyList<Quantizer> Methods, int[] Bits, int[] Axes)
{
    /// <summary>Whether the tensor is quantized at all.</summary>
    public bool Quantized => Methods.Count > 0;

    /// <summary>The first candidate quantizer, or null when the tensor stays in float32.</summary>
    public Quantizer? Quantizer => Methods.Count > 0 ? Methods[0] : null;

    /// <summary>Candidates per pruning mask: every axis, quantizer and width.</summary>
    public int Variants => Axes.Length * Methods.Count * Bits.Length;

    /// <summary>The axis, quantizer and width of variant <paramref name="variant"/> (axis-major, then quantizer, then width).</summary>
    public (int Axis, Quantizer Quantizer, int Bits) Variant(int variant) =>
        (Axes[variant / (Methods.Count * Bits.Length)], Methods[variant / Bits.Length % Methods.Count], Bits[variant % Bits.Length]);

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
                return new TensorPlan(weight, [], [], []);
            }

            var match = options.Overrides.FirstOrDefault(o => Glob.IsMatch(o.Match, weight.Name));
            var bits = match?.Bits is { } fixedBits ? [fixedBits] : options.Bits.Distinct().Order().ToArray();
            var method = match?.Method ?? options.Method;
            Quantizer[] methods = method == QuantizationMethods.Auto
                ? [.. QuantizationMethods.Searched.Select(registry.Get)]
                : [registry.Get(method)];
            var channel = weight.OutputChannelAxis;
            int[] axes = options.Granularity switch
            {
                Granularity.PerTensor => [-1],
                Granularity.PerChannel => [channel],
                _ => channel < 0 ? [-1] : [channel, -1],
            };
            return new TensorPlan(weight, methods, bits, axes);
        }).ToArray();
    }

    /// <summary>Whether any plan (or the Omega) uses the Hessian diagonal, which only the trace analysis estimates.</summary>
    public static bool NeedDiagonal(IEnumerable<TensorPlan> plans, OmegaKind omega) =>
        omega == OmegaKind.HessianDiagonal || plans.Any(p => p.Methods.Any(m => m.UsesHessianDiagonal));
}
