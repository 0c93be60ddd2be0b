using QuantTasks.Blob;
using QuantTasks.Engine.Native;
using QuantTasks.Quantization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Training;

/// <summary>
/// One initializer as fine-tuning trains it: a few shared values from which the whole weight is rebuilt on every
/// forward pass, so that the gradient each shared value receives is the sum of the gradients of the weights that
/// use it (Deep Compression's centroid update), and the symbols, pruning mask and coded size never change.
/// </summary>
internal abstract class TrainableTensor : IDisposable
{
    protected TrainableTensor(string name, long[] dims)
    {
        Name = name;
        Dims = dims;
    }

    /// <summary>The initializer's name, which the rebuilt weight replaces in the graph.</summary>
    public string Name { get; }

    /// <summary>Its dimensions.</summary>
    public long[] Dims { get; }

    /// <summary>What the optimizer updates.</summary>
    public abstract IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>The weight from the current shared values, differentiable with respect to them.</summary>
    public abstract Tensor Weight();

    /// <summary>After an optimizer step: puts back what must not move (levels that pruned weights use stay exactly zero).</summary>
    public virtual void AfterStep()
    {
    }

    /// <summary>The tensor as the blob stores it, with the trained shared values.</summary>
    public abstract StoredTensor ToStored();

    /// <summary>A quantized tensor's trainable form (codebook levels, or uniform scales and offsets); a float tensor's own values.</summary>
    public static TrainableTensor For(StoredTensor stored, Device device)
    {
        ArgumentNullException.ThrowIfNull(stored);
        return stored.Quantized switch
        {
            { IsCodebook: true } q => new CodebookLevels(stored, q, device),
            { } q => new UniformGrid(stored, q, device),
            null => new FreeValues(stored.Name, stored.Dims.ToArray(), stored.FloatValues!, device, stored.ElementType, inCatalog: true),
        };
    }

    /// <summary>The current values of the parameters, for early stopping's best epoch.</summary>
    public float[][] Snapshot() => Parameters.Select(p => p.detach().cpu().data<float>().ToArray()).ToArray();

    /// <summary>Puts back a <see cref="Snapshot"/>.</summary>
    public void Restore(float[][] snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        using var _ = no_grad();
        for (var i = 0; i < Parameters.Count; i++)
        {
            using var values = tensor(snapshot[i], Parameters[i].shape).to(Parameters[i].device);
            Parameters[i].copy_(values);
        }
    }

    public virtual void Dispose()
    {
        foreach (var p in Parameters)
        {
            p.Dispose();
        }
    }

    /// <summary>Element i's channel: (i / inner) mod channels, as the runtime lays levels out.</summary>
    protected static long[] ChannelOf(QuantizedTensor q)
    {
        var channels = new long[q.Symbols.Length];
        var inner = q.Inner;
        for (long i = 0; i < channels.Length; i++)
        {
            channels[i] = q.Channels == 1 ? 0 : (i / inner) % q.Channels;
        }

        return channels;
    }

    protected static float[] Values(Tensor t) => t.detach().cpu().data<float>().ToArray();
}

/// <summary>
/// A codebook per channel: weight[i] = levels[channel(i) x 2^bits + symbol(i)]. The gather's backward adds every
/// weight's gradient into its level. A level that is exactly zero (the centre pruned weights use) stays zero.
/// The trained parameter is each level divided by its channel's largest level magnitude (a constant).
/// </summary>
internal sealed class CodebookLevels : TrainableTensor
{
    private readonly StoredTensor _stored;
    private readonly QuantizedTensor _quantized;
    private readonly Parameter _levels;
    private readonly float[] _unit;
    private readonly Tensor _units;
    private readonly Tensor _index;
    private readonly Tensor? _pinned;
    private readonly Scalar _zero = 0f.ToScalar();

    public CodebookLevels(StoredTensor stored, QuantizedTensor quantized, Device device)
        : base(stored.Name, stored.Dims.ToArray())
    {
        _stored = stored;
        _quantized = quantized;
        var levels = 1L << quantized.Bits;
        var channels = ChannelOf(quantized);
        var index = new long[channels.Length];
        for (var i = 0; i < index.Length; i++)
        {
            index[i] = (channels[i] * levels) + quantized.Symbols[i];
        }

        // Each channel's levels are trained in units of its largest level, so that one learning rate moves every
        // channel by the same fraction of its range (Adam's step is about the rate in the parameter's units).
        _unit = new float[quantized.Parameters.Length];
        for (var c = 0; c < quantized.Channels; c++)
        {
            var largest = 0f;
            for (var q = 0; q < levels; q++)
            {
                largest = Math.Max(largest, Math.Abs(quantized.Parameters[(c * levels) + q]));
            }

            for (var q = 0; q < levels; q++)
            {
                _unit[(c * levels) + q] = largest > 0 ? largest : 1f;
            }
        }

        _levels = new Parameter(tensor(quantized.Parameters.Select((v, i) => v / _unit[i]).ToArray()).to(device), requires_grad: true);
        _units = tensor(_unit).to(device);
        _index = tensor(index, ScalarType.Int64).to(device);
        var pinned = quantized.Parameters.Select(v => v == 0f).ToArray();
        _pinned = pinned.Any(p => p) ? tensor(pinned).to(device) : null;
    }

    public override IReadOnlyList<Parameter> Parameters => [_levels];

    public override Tensor Weight() => (_levels * _units).index_select(0, _index).reshape(Dims);

    /// <summary>The levels as the blob stores them.</summary>
    public float[] Levels()
    {
        var units = Values(_levels);
        return units.Select((v, i) => v * _unit[i]).ToArray();
    }

    public override void AfterStep()
    {
        if (_pinned is not null)
        {
            using var _ = no_grad();
            _levels.masked_fill_(_pinned, _zero);
        }
    }

    public override StoredTensor ToStored() => StoredTensor.Of(_quantized.WithParameters(Levels()), _stored.ElementType);

    public override void Dispose()
    {
        base.Dispose();
        _units.Dispose();
        _index.Dispose();
        _pinned?.Dispose();
        _zero.Dispose();
    }
}

/// <summary>
/// Evenly spaced levels per channel: weight[i] = offset[c] + symbol(i) x scale[c]. Both train (the scale through
/// its logarithm, the offset in steps of the initial scale); in a channel with
/// a level exactly at zero (pruned weights, or a zero-exact grid) the offset follows the scale as -z x scale, so
/// that level stays exactly zero in the runtime's float32 arithmetic.
/// </summary>
internal sealed class UniformGrid : TrainableTensor
{
    private readonly StoredTensor _stored;
    private readonly QuantizedTensor _quantized;
    private readonly Tensor _initialScale;
    private readonly Tensor _initialOffset;
    private readonly Parameter _logScale;
    private readonly Parameter _offsetSteps;
    private readonly Tensor _channel;
    private readonly Tensor _symbols;
    private readonly int[] _zeroSymbol;
    private readonly Tensor? _zeroPinned;
    private readonly Tensor? _zeroLevel;

    public UniformGrid(StoredTensor stored, QuantizedTensor quantized, Device device)
        : base(stored.Name, stored.Dims.ToArray())
    {
        _stored = stored;
        _quantized = quantized;
        var channels = quantized.Channels;
        var scales = new float[channels];
        var offsets = new float[channels];
        _zeroSymbol = new int[channels];
        var levels = 1 << quantized.Bits;
        for (var c = 0; c < channels; c++)
        {
            scales[c] = quantized.Parameters[2 * c];
            offsets[c] = quantized.Parameters[(2 * c) + 1];
            _zeroSymbol[c] = -1;
            for (var q = 0; q < levels; q++)
            {
                if (offsets[c] + (q * scales[c]) == 0f)
                {
                    _zeroSymbol[c] = q;
                    break;
                }
            }
        }

        // Trained as scale = s0 exp(rho) and offset = o0 + s0 beta from rho = beta = 0: steps are fractions of each
        // channel's own step size, whatever its magnitude, and the scale cannot change sign.
        _initialScale = tensor(scales.Select(v => v == 0 ? 1e-12f : v).ToArray()).to(device);
        _initialOffset = tensor(offsets).to(device);
        _logScale = new Parameter(zeros(channels).to(device), requires_grad: true);
        _offsetSteps = new Parameter(zeros(channels).to(device), requires_grad: true);
        _channel = tensor(ChannelOf(quantized), ScalarType.Int64).to(device);
        _symbols = tensor(quantized.Symbols.Select(s => (float)s).ToArray()).to(device);
        if (_zeroSymbol.Any(z => z >= 0))
        {
            _zeroPinned = tensor(_zeroSymbol.Select(z => z >= 0).ToArray()).to(device);
            _zeroLevel = tensor(_zeroSymbol.Select(z => (float)Math.Max(z, 0)).ToArray()).to(device);
        }
    }

    public override IReadOnlyList<Parameter> Parameters => [_logScale, _offsetSteps];

    private Tensor Scale() => _initialScale * _logScale.exp();

    private Tensor Offset(Tensor scale)
    {
        var offset = _initialOffset.add(_initialScale * _offsetSteps, LibTorch.One);
        return _zeroPinned is null ? offset : where(_zeroPinned, -(_zeroLevel! * scale), offset);
    }

    public override Tensor Weight()
    {
        var scale = Scale();
        return Offset(scale).index_select(0, _channel).add(_symbols * scale.index_select(0, _channel), LibTorch.One).reshape(Dims);
    }

    public override StoredTensor ToStored()
    {
        using var _ = no_grad();
        using var scale = Scale();
        using var offset = Offset(scale);
        var scales = Values(scale);
        var offsets = Values(offset);
        var parameters = new float[scales.Length * 2];
        for (var c = 0; c < scales.Length; c++)
        {
            parameters[2 * c] = scales[c];
            // The runtime computes offset + z x scale in float32: with offset = -(z x scale) that is exactly zero.
            parameters[(2 * c) + 1] = _zeroSymbol[c] >= 0 ? -(_zeroSymbol[c] * scales[c]) : offsets[c];
        }

        return StoredTensor.Of(_quantized.WithParameters(parameters), _stored.ElementType);
    }

    public override void Dispose()
    {
        base.Dispose();
        _initialScale.Dispose();
        _initialOffset.Dispose();
        _channel.Dispose();
        _symbols.Dispose();
        _zeroPinned?.Dispose();
        _zeroLevel?.Dispose();
    }
}

/// <summary>A tensor kept in float (a bias, a keep_float weight): every element trains.</summary>
internal sealed class FreeValues : TrainableTensor
{
    private readonly Parameter _values;
    private readonly int _elementType;
    private readonly bool _inCatalog;

    public FreeValues(string name, long[] dims, float[] values, Device device, int elementType, bool inCatalog)
        : base(name, dims)
    {
        _values = new Parameter(tensor(values, dims).to(device), requires_grad: true);
        _elementType = elementType;
        _inCatalog = inCatalog;
    }

    /// <summary>Whether it is one of the catalog's weights (stored in the blob's tensor section) rather than a graph initializer.</summary>
    public bool InCatalog => _inCatalog;

    public override IReadOnlyList<Parameter> Parameters => [_values];

    public override Tensor Weight() => _values;

    /// <summary>The trained values.</summary>
    public float[] TrainedValues() => Values(_values);

    public override StoredTensor ToStored() => StoredTensor.KeptInFloat(Name, Dims, _elementType, TrainedValues());
}

/// <summary>
/// Quantization-aware training of a quantized tensor's float weights: the forward pass uses each weight rounded
/// to the nearest level of its channel's current grid, the backward pass treats the rounding as the identity
/// (the straight-through estimator), and the float weights move. Weights at a zero level of a pruned tensor are
/// held at zero, so the mask survives. The float weights (not these levels) are what the search quantizes again.
/// </summary>
internal sealed class QuantizationAwareWeights : TrainableTensor
{
    private readonly QuantizedTensor _quantized;
    private readonly int _elementType;
    private readonly Tensor _firstLevel;
    private readonly Parameter _values;
    private readonly Tensor _units;
    private readonly Tensor? _keep;
    private readonly Tensor _table;
    private readonly Tensor _channel;

    /// <param name="stored">The tensor as quantized.</param>
    /// <param name="values">Its float values before quantization.</param>
    /// <param name="pruned">Whether the search pruned it (its zero-level weights stay zero).</param>
    /// <param name="device">Where it trains.</param>
    public QuantizationAwareWeights(StoredTensor stored, float[] values, bool pruned, Device device)
        : base(stored.Name, stored.Dims.ToArray())
    {
        ArgumentNullException.ThrowIfNull(stored);
        ArgumentNullException.ThrowIfNull(values);
        var q = stored.Quantized ?? throw new ArgumentException("Only quantized tensors train quantization-aware.", nameof(stored));
        _quantized = q;
        _elementType = stored.ElementType;
        var levels = 1 << q.Bits;
        var reconstructed = q.Dequantize();
        var channels = ChannelOf(q);
        var levelTable = q.LevelTable();

        // Weights in units of their channel's largest magnitude, as the shared levels train.
        var unit = new float[q.Channels];
        for (var i = 0; i < values.Length; i++)
        {
            unit[channels[i]] = Math.Max(unit[channels[i]], Math.Abs(values[i]));
        }

        var keep = new float[values.Length];
        var scaled = new float[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            var u = unit[channels[i]] > 0 ? unit[channels[i]] : 1f;
            keep[i] = pruned && reconstructed[i] == 0f ? 0f : 1f;
            scaled[i] = keep[i] * values[i] / u;
        }

        _values = new Parameter(tensor(scaled, Dims).to(device), requires_grad: true);
        _units = tensor(channels.Select(c => unit[c] > 0 ? unit[c] : 1f).ToArray(), Dims).to(device);
        _keep = keep.Contains(0f) ? tensor(keep, Dims).to(device) : null;
        _table = tensor(levelTable, [q.Channels, levels]).to(device);
        _channel = tensor(channels, ScalarType.Int64).to(device);
        _firstLevel = tensor(channels.Select(c => c * levels).ToArray(), ScalarType.Int64).to(device);
    }

    public override IReadOnlyList<Parameter> Parameters => [_values];

    public override Tensor Weight()
    {
        var weights = _values * _units;
        Tensor rounded;
        using (no_grad())
        {
            var symbols = NearestSymbols(weights.detach().reshape(-1));
            rounded = _table.reshape(-1).index_select(0, _firstLevel.add(symbols, LibTorch.One)).reshape(Dims);
        }

        var straightThrough = weights.add(rounded.add(weights, LibTorch.MinusOne).detach(), LibTorch.One);
        return _keep is null ? straightThrough : straightThrough * _keep;
    }

    // Each element's nearest level of its own channel, as a symbol; in chunks so that the distance matrix stays small.
    private Tensor NearestSymbols(Tensor flat)
    {
        var parts = new List<Tensor>();
        const long chunk = 1 << 16;
        for (long start = 0; start < flat.shape[0]; start += chunk)
        {
            var length = Math.Min(chunk, flat.shape[0] - start);
            var levels = _table.index_select(0, _channel.narrow(0, start, length));
            parts.Add(levels.add(flat.narrow(0, start, length).unsqueeze(1), LibTorch.MinusOne).abs().argmin(1));
        }

        return cat(parts, 0);
    }

    public override void AfterStep()
    {
        if (_keep is not null)
        {
            using var _ = no_grad();
            _values.mul_(_keep);
        }
    }

    /// <summary>The trained float weights, which the search quantizes again.</summary>
    public float[] TrainedValues()
    {
        using var _ = no_grad();
        using var weights = _values * _units;
        return Values(weights);
    }

    /// <summary>
    /// The trained weights on the grid they were trained on: each at its channel's nearest level, the levels as
    /// they were. This is exactly the model the training's forward passes ran, so nothing is lost in between;
    /// the symbols (and so the coded size) are new.
    /// </summary>
    public override StoredTensor ToStored()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var nearest = NearestSymbols((_values * _units).reshape(-1)).cpu().data<long>().ToArray();
        var symbols = nearest.Select(n => (byte)n).ToArray();

        return StoredTensor.Of(_quantized.IsCodebook
            ? QuantizedTensor.Codebook(Name, Dims, _quantized.Bits, _quantized.ChannelAxis, _quantized.Parameters, symbols, _quantized.Method)
            : QuantizedTensor.Uniform(Name, Dims, _quantized.Bits, _quantized.ChannelAxis, _quantized.Parameters, symbols, _quantized.Method), _elementType);
    }

    public override void Dispose()
    {
        base.Dispose();
        _units.Dispose();
        _keep?.Dispose();
        _table.Dispose();
        _channel.Dispose();
        _firstLevel.Dispose();
    }
}
