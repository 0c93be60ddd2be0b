using QuantTasks.Runtime.Format;
using QuantTasks.Runtime.Quantization;

namespace QuantTasks.Quantization;

/// <summary>
/// A weight tensor after quantization: one symbol per element and, per channel, the levels the symbols stand
/// for (uniform scale and offset, or a codebook). Reconstruction uses the runtime's own level table, so the
/// values measured at build time are exactly those the app's session holds.
/// </summary>
internal sealed class QuantizedTensor
{
    internal QuantizedTensor(string name, long[] dims, int bits, QuantizerKind kind, int channelAxis, float[] parameters, byte[] symbols, string method)
    {
        Name = name;
        Dims = dims;
        Bits = bits;
        Kind = kind;
        ChannelAxis = channelAxis;
        Channels = channelAxis < 0 ? 1 : (int)dims[channelAxis];
        Parameters = parameters;
        Symbols = symbols;
        Method = method;
    }

    /// <summary>
    /// A tensor with evenly spaced levels: per channel a (scale, offset) pair, value = offset + symbol x scale.
    /// For stages outside Core (fine-tuning, compensation) that compute symbols and levels themselves.
    /// </summary>
    public static QuantizedTensor Uniform(string name, long[] dims, int bits, int channelAxis, float[] scalesAndOffsets, byte[] symbols, string method) =>
        Checked(new QuantizedTensor(name, dims, bits, QuantizerKind.Uniform, channelAxis, scalesAndOffsets, symbols, method));

    /// <summary>A tensor with a codebook: per channel 2^bits values, value = codebook[channel][symbol].</summary>
    public static QuantizedTensor Codebook(string name, long[] dims, int bits, int channelAxis, float[] codebooks, byte[] symbols, string method) =>
        Checked(new QuantizedTensor(name, dims, bits, QuantizerKind.Codebook, channelAxis, codebooks, symbols, method));

    /// <summary>
    /// The same symbols with new levels (scales and offsets, or codebook values, laid out as <see cref="Parameters"/>):
    /// what a refine stage writes back. Symbols, and so the coded size the search chose, stay as they are.
    /// </summary>
    public QuantizedTensor WithParameters(float[] parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (parameters.Length != Parameters.Length)
        {
            throw new ArgumentException($"Tensor '{Name}' has {Parameters.Length} level parameters; {parameters.Length} were given.", nameof(parameters));
        }

        return new QuantizedTensor(Name, Dims.ToArray(), Bits, Kind, ChannelAxis, parameters, Symbols, Method);
    }

    /// <summary>Whether the levels are a codebook (otherwise uniform scale and offset per channel).</summary>
    public bool IsCodebook => Kind == QuantizerKind.Codebook;

    private static QuantizedTensor Checked(QuantizedTensor tensor)
    {
        var elements = tensor.Dims.Aggregate(1L, (a, b) => a * b);
        var levels = 1 << tensor.Bits;
        var expected = tensor.Kind == QuantizerKind.Uniform ? tensor.Channels * 2 : tensor.Channels * levels;
        if (tensor.Bits is < 1 or > 8 || tensor.Symbols.Length != elements || tensor.Parameters.Length != expected || tensor.Symbols.Any(s => s >= levels))
        {
            throw new ArgumentException($"Tensor '{tensor.Name}': {tensor.Symbols.Length} symbols, {tensor.Parameters.Length} parameters and {tensor.Bits} bits do not fit shape [{string.Join(", ", tensor.Dims)}].");
        }

        return tensor;
    }

    /// <summary>The weight's name.</summary>
    public string Name { get; }

    /// <summary>The weight's dimensions.</summary>
    public IReadOnlyList<long> Dims { get; }

    /// <summary>Bits per symbol.</summary>
    public int Bits { get; }

    /// <summary>The method name for reports (uniform, kmeans, hessian-kmeans, ecsq).</summary>
    public string Method { get; }

    /// <summary>Per-channel axis, or -1 for one set of levels for the whole tensor.</summary>
    public int ChannelAxis { get; }

    /// <summary>Number of channels (1 per tensor).</summary>
    public int Channels { get; }

    internal QuantizerKind Kind { get; }

    /// <summary>Uniform: (scale, offset) per channel; codebook: 2^bits values per channel.</summary>
    internal float[] Parameters { get; }

    /// <summary>One symbol per element, in C order.</summary>
    internal byte[] Symbols { get; }

    /// <summary>The product of the dimensions after the channel axis (all of them per tensor).</summary>
    internal long Inner => ChannelAxis < 0 ? Symbols.Length : Dims.Skip(ChannelAxis + 1).Aggregate(1L, (a, b) => a * b);

    /// <summary>The values the runtime will reconstruct, as float32.</summary>
    public float[] Dequantize()
    {
        var levels = 1 << Bits;
        var table = LevelTable();
        var bytes = new byte[Symbols.Length * 4];
        Dequantizer.Expand(Symbols, table, levels, Channels, Inner, 1, bytes);
        var values = new float[Symbols.Length];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }

    /// <summary>The value of every (channel, symbol), <c>table[channel * 2^bits + symbol]</c>, as the runtime expands it.</summary>
    internal float[] LevelTable() => Dequantizer.LevelTable(Kind, Channels, 1 << Bits, ParameterBytes());

    /// <summary>The parameters as the blob stores them: little-endian float32.</summary>
    internal byte[] ParameterBytes()
    {
        var bytes = new byte[Parameters.Length * 4];
        for (var i = 0; i < Parameters.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), Parameters[i]);
        }

        return bytes;
    }
}
