using System;
using System.Text;

namespace QuantTasks.Runtime.Onnx;

/// <summary>
/// Appends initializers to a serialized ONNX model without a protobuf library. Protobuf merges a message
/// field that occurs twice, and concatenates repeated fields, so a second <c>ModelProto.graph</c> (field 7)
/// holding only <c>GraphProto.initializer</c> entries (field 5) adds those tensors to the model's graph.
/// Each <c>TensorProto</c> carries dims (field 1), data_type (2), name (8) and raw_data (9).
/// </summary>
internal static class OnnxInitializerWriter
{
    private const byte GraphTag = (7 << 3) | 2;
    private const byte InitializerTag = (5 << 3) | 2;
    private const byte DimsTag = 1 << 3;
    private const byte DataTypeTag = 2 << 3;
    private const byte NameTag = (8 << 3) | 2;
    private const byte RawDataTag = (9 << 3) | 2;

    /// <summary>Bytes of one initializer's <c>TensorProto</c> holding <paramref name="dataLength"/> bytes of raw data.</summary>
    public static long TensorHeaderLength(string name, long[] dims, int dataType, long dataLength)
    {
        long length = 0;
        foreach (var dim in dims)
        {
            length += 1 + VarintLength((ulong)dim);
        }

        var nameBytes = Encoding.UTF8.GetByteCount(name);
        length += 1 + VarintLength((ulong)dataType);
        length += 1 + VarintLength((ulong)nameBytes) + nameBytes;
        length += 1 + VarintLength((ulong)dataLength);
        return length;
    }

    /// <summary>Bytes the graph wrapper adds in front of initializers of total length <paramref name="initializersLength"/>.</summary>
    public static long GraphHeaderLength(long initializersLength) => 1 + VarintLength((ulong)initializersLength);

    /// <summary>Bytes the initializer wrapper adds in front of a tensor of length <paramref name="tensorLength"/>.</summary>
    public static long InitializerHeaderLength(long tensorLength) => 1 + VarintLength((ulong)tensorLength);

    /// <summary>Writes the graph field's tag and length; returns the bytes written.</summary>
    public static int WriteGraphHeader(Span<byte> target, long initializersLength)
    {
        target[0] = GraphTag;
        return 1 + WriteVarint(target.Slice(1), (ulong)initializersLength);
    }

    /// <summary>
    /// Writes an initializer entry up to the start of its raw data; the caller writes the
    /// <paramref name="dataLength"/> data bytes right after. Returns the bytes written.
    /// </summary>
    public static int WriteInitializerHeader(Span<byte> target, string name, long[] dims, int dataType, long dataLength)
    {
        var tensorLength = TensorHeaderLength(name, dims, dataType, dataLength) + dataLength;
        var at = 0;
        target[at++] = InitializerTag;
        at += WriteVarint(target.Slice(at), (ulong)tensorLength);
        foreach (var dim in dims)
        {
            target[at++] = DimsTag;
            at += WriteVarint(target.Slice(at), (ulong)dim);
        }

        target[at++] = DataTypeTag;
        at += WriteVarint(target.Slice(at), (ulong)dataType);
        var nameBytes = Encoding.UTF8.GetBytes(name);
        target[at++] = NameTag;
        at += WriteVarint(target.Slice(at), (ulong)nameBytes.Length);
        nameBytes.CopyTo(target.Slice(at));
        at += nameBytes.Length;
        target[at++] = RawDataTag;
        at += WriteVarint(target.Slice(at), (ulong)dataLength);
        return at;
    }

    private static int VarintLength(ulong value)
    {
        var length = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            length++;
        }

        return length;
    }

    private static int WriteVarint(Span<byte> target, ulong value)
    {
        var i = 0;
        while (value >= 0x80)
        {
            target[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        target[i++] = (byte)value;
        return i;
    }
}
