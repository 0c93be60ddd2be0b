using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Text;

namespace QuantTasks.Runtime.Format;

/// <summary>One tensor's entry in the tensor directory: what it is and where its payload lies.</summary>
internal sealed class TensorEntry
{
    public string Name { get; set; } = "";

    /// <summary>The ONNX data type the graph declares for it (1 float32, 10 float16, 11 double, 16 bfloat16).</summary>
    public int ElementType { get; set; }

    public long[] Dims { get; set; } = [];

    public QuantizerKind Quantizer { get; set; }

    /// <summary>Bits per symbol, 1 to 8; 0 for float tensors.</summary>
    public int Bits { get; set; }

    public CoderKind Coder { get; set; }

    /// <summary>
    /// Huffman only: how many consecutive symbols one code stands for (1 to 8, bits x group at most 8). Coding
    /// pairs or quadruples of narrow symbols removes most of Huffman's up-to-one-bit loss per code.
    /// </summary>
    public int Group { get; set; } = 1;

    /// <summary>For zero-run coding, the symbol whose runs are coded.</summary>
    public byte ZeroSymbol { get; set; }

    /// <summary>The axis with one scale or codebook per index, or -1 for one per tensor.</summary>
    public int ChannelAxis { get; set; }

    public int Channels { get; set; }

    /// <summary>Offset of the payload within the payload section.</summary>
    public long PayloadOffset { get; set; }

    public long PayloadLength { get; set; }

    /// <summary>The quantizer that produced the symbols (uniform, kmeans, hessian-kmeans, ecsq), for reports.</summary>
    public string Method { get; set; } = "";

    public long Elements
    {
        get
        {
            long count = 1;
            foreach (var dim in Dims)
            {
                count *= dim;
            }

            return count;
        }
    }

    /// <summary>Symbols per channel: 2^bits.</summary>
    public int Levels => Quantizer == QuantizerKind.Float ? 0 : 1 << Bits;

    /// <summary>Bytes of the per-channel parameters (scales and offsets, or codebooks) at the start of the payload.</summary>
    public long ParameterBytes => Quantizer switch
    {
        QuantizerKind.Uniform => (long)Channels * 8,
        QuantizerKind.Codebook => (long)Channels * Levels * 4,
        _ => 0,
    };

    /// <summary>Bytes of the code-length tables after the parameters.</summary>
    public long TableBytes => Coder switch
    {
        CoderKind.Huffman => Coding.CanonicalCode.PackedLengthBytes(1 << (Bits * Group)),
        CoderKind.ZeroRunHuffman => Coding.CanonicalCode.PackedLengthBytes(Levels) + Coding.CanonicalCode.PackedLengthBytes(BlobFormat.RunAlphabet),
        _ => 0,
    };

    /// <summary>Bytes of one element in the decoded model.</summary>
    public static int ElementSize(int elementType) => elementType switch
    {
        1 => 4,
        10 or 16 => 2,
        11 => 8,
        _ => 0,
    };

    /// <summary>Appends the entry's binary form.</summary>
    public void Write(List<byte> output)
    {
        var name = Encoding.UTF8.GetBytes(Name);
        var method = Encoding.UTF8.GetBytes(Method);
        Span<byte> scratch = stackalloc byte[8];
        void Put(ReadOnlySpan<byte> bytes)
        {
            foreach (var b in bytes)
            {
                output.Add(b);
            }
        }

        BinaryPrimitives.WriteUInt16LittleEndian(scratch, checked((ushort)name.Length));
        Put(scratch.Slice(0, 2));
        Put(name);
        BinaryPrimitives.WriteInt32LittleEndian(scratch, ElementType);
        Put(scratch.Slice(0, 4));
        output.Add(checked((byte)Dims.Length));
        foreach (var dim in Dims)
        {
            BinaryPrimitives.WriteInt64LittleEndian(scratch, dim);
            Put(scratch);
        }

        output.Add((byte)Quantizer);
        output.Add((byte)Bits);
        output.Add((byte)Coder);
        output.Add((byte)Group);
        output.Add(ZeroSymbol);
        BinaryPrimitives.WriteInt32LittleEndian(scratch, ChannelAxis);
        Put(scratch.Slice(0, 4));
        BinaryPrimitives.WriteInt32LittleEndian(scratch, Channels);
        Put(scratch.Slice(0, 4));
        BinaryPrimitives.WriteInt64LittleEndian(scratch, PayloadOffset);
        Put(scratch);
        BinaryPrimitives.WriteInt64LittleEndian(scratch, PayloadLength);
        Put(scratch);
        BinaryPrimitives.WriteUInt16LittleEndian(scratch, checked((ushort)method.Length));
        Put(scratch.Slice(0, 2));
        Put(method);
    }

    /// <summary>Reads one entry, checking every field against what the format allows.</summary>
    public static TensorEntry Read(ref SpanReader reader, long payloadLength)
    {
        var entry = new TensorEntry { Name = reader.String(reader.UInt16()) };
        entry.ElementType = reader.Int32();
        if (ElementSize(entry.ElementType) == 0)
        {
            throw Bad(entry, $"has element type {entry.ElementType}; the format stores float32 (1), float16 (10), double (11) and bfloat16 (16)");
        }

        int rank = reader.Byte();
        var dims = new long[rank];
        for (var i = 0; i < rank; i++)
        {
            dims[i] = reader.Int64();
            if (dims[i] < 0 || dims[i] > BlobFormat.MaxDecodedBytes)
            {
                throw Bad(entry, $"has dimension {dims[i]}");
            }
        }

        entry.Dims = dims;
        entry.Quantizer = (QuantizerKind)reader.Byte();
        entry.Bits = reader.Byte();
        entry.Coder = (CoderKind)reader.Byte();
        entry.Group = reader.Byte();
        entry.ZeroSymbol = reader.Byte();
        entry.ChannelAxis = reader.Int32();
        entry.Channels = reader.Int32();
        entry.PayloadOffset = reader.Int64();
        entry.PayloadLength = reader.Int64();
        entry.Method = reader.String(reader.UInt16());
        entry.Validate(payloadLength);
        return entry;
    }

    private void Validate(long payloadSectionLength)
    {
        long elements = 1;
        foreach (var dim in Dims)
        {
            elements *= dim;
            if (elements * 8 > BlobFormat.MaxDecodedBytes)
            {
                throw Bad(this, "is too large to decode (over 2 GB)");
            }
        }

        if (PayloadOffset < 0 || PayloadLength < 0 || PayloadOffset > payloadSectionLength - PayloadLength)
        {
            throw Bad(this, "has a payload outside the payload section");
        }

        switch (Quantizer)
        {
            case QuantizerKind.Float:
                if (Coder != CoderKind.Raw || Bits != 0 || Group != 1 || ChannelAxis != -1 || Channels != 1 || PayloadLength != elements * 4)
                {
                    throw Bad(this, "is a float tensor with inconsistent fields");
                }

                return;
            case QuantizerKind.Uniform or QuantizerKind.Codebook:
                break;
            default:
                throw Bad(this, $"has unknown quantizer {(int)Quantizer}");
        }

        if (Bits is < 1 or > 8)
        {
            throw Bad(this, $"has {Bits} bits per symbol; the format allows 1 to 8");
        }

        if (Coder is not (CoderKind.Fixed or CoderKind.Huffman or CoderKind.ZeroRunHuffman))
        {
            throw Bad(this, $"has unknown coder {(int)Coder}");
        }

        if (Group < 1 || Bits * Group > 8 || (Group != 1 && Coder != CoderKind.Huffman))
        {
            throw Bad(this, $"groups {Group} symbols of {Bits} bits per code");
        }

        if (ZeroSymbol >= Levels)
        {
            throw Bad(this, $"has zero symbol {ZeroSymbol} outside its {Levels} levels");
        }

        var expectedChannels = ChannelAxis == -1 ? 1 : ChannelAxis >= 0 && ChannelAxis < Dims.Length ? Dims[ChannelAxis] : -1;
        if (expectedChannels < 1 || Channels != expectedChannels)
        {
            throw Bad(this, $"has {Channels} channels on axis {ChannelAxis} of shape [{string.Join(", ", Dims)}]");
        }

        var streamBytes = PayloadLength - ParameterBytes - TableBytes;
        if (streamBytes < 0)
        {
            throw Bad(this, "has a payload too short for its parameters and code tables");
        }

        if (Coder == CoderKind.Fixed && streamBytes != ((elements * Bits) + 7) / 8)
        {
            throw Bad(this, "has a fixed-width stream of the wrong length");
        }
    }

    private static QuantBlobException Bad(TensorEntry entry, string what) =>
        new($"Tensor '{entry.Name}' in the blob's directory {what}; the blob is corrupt.");
}

/// <summary>Reads little-endian fields from a span, throwing <see cref="QuantBlobException"/> past its end.</summary>
internal ref struct SpanReader
{
    private readonly ReadOnlySpan<byte> _data;
    private readonly string _what;

    public SpanReader(ReadOnlySpan<byte> data, string what)
    {
        _data = data;
        _what = what;
        Position = 0;
    }

    public int Position { get; private set; }

    public readonly int Remaining => _data.Length - Position;

    public byte Byte() => Take(1)[0];

    public ushort UInt16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));

    public int Int32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));

    public uint UInt32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));

    public long Int64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));

    public ulong UInt64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

    public string String(int length)
    {
        var bytes = Take(length);
#if NETSTANDARD2_0
        return Encoding.UTF8.GetString(bytes.ToArray());
#else
        return Encoding.UTF8.GetString(bytes);
#endif
    }

    public ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || count > Remaining)
        {
            throw new QuantBlobException($"The blob's {_what} ends early; the blob is truncated or corrupt.");
        }

        var slice = _data.Slice(Position, count);
        Position += count;
        return slice;
    }
}
