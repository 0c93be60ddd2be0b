using QuantTasks.Diagnostics;
using QuantTasks.Policy;

namespace QuantTasks.Quantization;

/// <summary>What a quantizer needs beyond the tensor's values.</summary>
[Flags]
internal enum QuantizerNeeds
{
    /// <summary>Nothing else.</summary>
    None = 0,

    /// <summary>The Hessian block's diagonal, from the trace analysis; the quantizer cannot run without it.</summary>
    HessianDiagonal = 1,

    /// <summary>Labelled calibration samples.</summary>
    Labels = 2,

    /// <summary>The layer's input activations on the calibration samples.</summary>
    Activations = 4,
}

/// <summary>
/// One quantization method, as <c>quantization.method</c> names it. A method is one subclass plus one line in
/// <see cref="QuantizerRegistry.Default"/> plus its name in the schema's enum; the search, the analysis and the
/// reports learn everything else (its name, what it needs) from here.
/// </summary>
internal abstract class Quantizer
{
    /// <summary>The policy's name for the method (kebab-case), also written into blobs and reports.</summary>
    public abstract string Name { get; }

    /// <summary>What the method cannot run without.</summary>
    public virtual QuantizerNeeds Requires => QuantizerNeeds.None;

    /// <summary>Whether the method weights its reconstruction by the Hessian diagonal when one is available.</summary>
    public virtual bool UsesHessianDiagonal => Requires.HasFlag(QuantizerNeeds.HessianDiagonal);

    /// <summary>Quantizes a prepared tensor (values, channel layout, pruning mask, optional diagonal) at <paramref name="bits"/>.</summary>
    public abstract QuantizedTensor Quantize(PreparedTensor tensor, int bits, QuantizerSettings settings);

    /// <summary>
    /// The price of code length the method's own assignment pays, for compensated rounding to pay the same; null
    /// (the default) when symbols are chosen by distortion alone.
    /// </summary>
    internal virtual RatePrice? RateOf(PreparedTensor tensor, QuantizerSettings settings) => null;

    public override string ToString() => Name;
}

/// <summary>
/// A method's price of code length: per channel, lambda' (one bit in units of the weighted squared error
/// h (w - c)^2), and the per-element importance h it weighted by (null for equal weights).
/// </summary>
/// <param name="ChannelRateWeight">lambda' per channel.</param>
/// <param name="ElementWeights">h per element in the tensor's layout, or null for 1.</param>
internal sealed record RatePrice(double[] ChannelRateWeight, float[]? ElementWeights);

/// <summary>Evenly spaced levels per channel or tensor, symmetric or with an offset.</summary>
internal sealed class UniformMethod : Quantizer
{
    public override string Name => QuantizationMethods.Uniform;

    public override QuantizedTensor Quantize(PreparedTensor tensor, int bits, QuantizerSettings settings) =>
        UniformQuantizer.Quantize(tensor.Name, tensor.PrunedValues(), tensor.Dims, bits, tensor.ChannelAxis,
            settings.SymmetricUniform, zeroExact: tensor.PrunedCount > 0);
}

/// <summary>Deep Compression's shared weights: k-means levels (k-means++ seeding).</summary>
internal sealed class KMeansMethod : Quantizer
{
    public override string Name => QuantizationMethods.Kmeans;

    public override QuantizedTensor Quantize(PreparedTensor tensor, int bits, QuantizerSettings settings) =>
        CodebookQuantizer.KMeans(tensor, bits, settings.Seed);
}

/// <summary>Choi et al.'s Hessian-weighted k-means: each weight's pull on its centroid is its Hessian diagonal.</summary>
internal sealed class HessianKMeansMethod : Quantizer
{
    public override string Name => QuantizationMethods.HessianKmeans;

    public override QuantizerNeeds Requires => QuantizerNeeds.HessianDiagonal;

    public override QuantizedTensor Quantize(PreparedTensor tensor, int bits, QuantizerSettings settings) =>
        CodebookQuantizer.KMeans(tensor, bits, settings.Seed);
}

/// <summary>Entropy-constrained scalar quantization (uniform cells, or the iterative distortion + lambda x rate algorithm).</summary>
internal sealed class EcsqMethod : Quantizer
{
    public override string Name => QuantizationMethods.Ecsq;

    // Weighted by the diagonal when the analysis produced one, plain otherwise.
    public override bool UsesHessianDiagonal => true;

    public override QuantizedTensor Quantize(PreparedTensor tensor, int bits, QuantizerSettings settings) =>
        settings.Ecsq == EcsqAlgorithm.Uniform
            ? CodebookQuantizer.EcsqUniform(tensor, bits)
            : CodebookQuantizer.EcsqIterative(tensor, bits, settings.EcsqLambda);

    // The iterative form chose its levels by distortion + lambda x code length; compensated rounding keeps the
    // same trade when it re-chooses symbols. Uniform cells have no lambda, so they are re-chosen by distortion.
    internal override RatePrice? RateOf(PreparedTensor tensor, QuantizerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(settings);
        return settings.Ecsq == EcsqAlgorithm.Iterative && settings.EcsqLambda > 0
            ? new RatePrice(tensor.Channels.Select(c => CodebookQuantizer.RateWeight(c, settings.EcsqLambda)).ToArray(), tensor.ElementWeights)
            : null;
    }
}

/// <summary>
/// The quantizers by name. <see cref="Default"/> holds the product's; <see cref="With"/> makes a registry with one
/// more (a test's, or a plug-in's), so nothing else changes when a method is added. A name without an
/// implementation is an error, never another method.
/// </summary>
internal sealed class QuantizerRegistry
{
    private readonly Dictionary<string, Quantizer> _byName;

    private QuantizerRegistry(IEnumerable<Quantizer> quantizers)
    {
        _byName = new Dictionary<string, Quantizer>(StringComparer.Ordinal);
        foreach (var quantizer in quantizers)
        {
            _byName[quantizer.Name] = quantizer;
        }
    }

    /// <summary>The product's quantizers.</summary>
    public static QuantizerRegistry Default { get; } = new([new UniformMethod(), new KMeansMethod(), new HessianKMeansMethod(), new EcsqMethod()]);

    /// <summary>Every registered name, sorted.</summary>
    public IReadOnlyList<string> Names => _byName.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>This registry with <paramref name="quantizer"/> added (or replacing the one of its name).</summary>
    public QuantizerRegistry With(Quantizer quantizer) => new(_byName.Values.Where(q => q.Name != quantizer.Name).Append(quantizer));

    /// <summary>The quantizer of that name.</summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.PolicyInvalidValue"/> when none is registered.</exception>
    public Quantizer Get(string name) =>
        _byName.TryGetValue(name, out var quantizer)
            ? quantizer
            : throw new QuantException(ErrorCode.PolicyInvalidValue,
                $"quantization.method '{name}' has no implementation in this QuantTasks; the methods are {string.Join(", ", Names)}.");
}
