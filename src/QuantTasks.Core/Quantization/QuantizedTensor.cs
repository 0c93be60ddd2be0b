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
        var table = Dequantizer.LevelTable(Kind, Channels, levels, ParameterBytes());
        var bytes = new byte[Symbols.Length * 4];
        Dequantizer.Expand(Symbols, table, levels, Channels, Inner, 1, bytes);
        var values = new float[Symbols.Length];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }

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
