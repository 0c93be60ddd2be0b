using System;
using System.Buffers;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using QuantTasks.Runtime.Coding;
using QuantTasks.Runtime.Format;
using QuantTasks.Runtime.Onnx;
using QuantTasks.Runtime.Quantization;

namespace QuantTasks.Runtime;

/// <summary>One tensor stored in a blob, as <c>dotnet quant inspect</c> and the reports describe it.</summary>
public sealed class QuantBlobTensor
{
    internal QuantBlobTensor(TensorEntry entry)
    {
        Name = entry.Name;
        Shape = entry.Dims;
        Bits = entry.Bits;
        Method = entry.Quantizer == QuantizerKind.Float ? "float" : entry.Method;
        Coder = entry.Coder switch
        {
            CoderKind.Raw => "raw",
            CoderKind.Fixed => "fixed",
            CoderKind.Huffman => "huffman",
            _ => "zero-run-huffman",
        };
        Elements = entry.Elements;
        PayloadBytes = entry.PayloadLength;
        PerChannel = entry.ChannelAxis >= 0;
    }

    /// <summary>The initializer's name in the decoded model.</summary>
    public string Name { get; }

    /// <summary>The tensor's dimensions.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>Bits per symbol; 0 for a tensor kept in float32.</summary>
    public int Bits { get; }

    /// <summary>The quantizer: uniform, kmeans, hessian-kmeans, ecsq, or float.</summary>
    public string Method { get; }

    /// <summary>How its symbols are coded: raw, fixed, huffman or zero-run-huffman.</summary>
    public string Coder { get; }

    /// <summary>Number of elements.</summary>
    public long Elements { get; }

    /// <summary>Bytes of its payload in the blob: parameters, code tables and coded symbols.</summary>
    public long PayloadBytes { get; }

    /// <summary>Whether it has one scale or codebook per output channel.</summary>
    public bool PerChannel { get; }
}

/// <summary>
/// A verified QuantTasks blob: header, section checksums and tensor directory all checked on
/// <see cref="Read(byte[])"/>. <see cref="DecodeOnnxModel"/> turns it into ONNX model bytes with float weights.
/// </summary>
public sealed class QuantBlob
{
    private readonly byte[] _bytes;
    private readonly SectionRecord _graph;
    private readonly SectionRecord _payload;
    private readonly TensorEntry[] _entries;

    private QuantBlob(byte[] bytes, SectionRecord[] sections)
    {
        _bytes = bytes;
        _graph = sections[1];
        _payload = sections[3];
        Metadata = ReadMetadata(Slice(sections[0]));
        _entries = ReadDirectory(Slice(sections[2]), _payload.Length);
        Tensors = _entries.Select(e => new QuantBlobTensor(e)).ToArray();
        ContentHash = ToHex(bytes.AsSpan(24, BlobFormat.ContentHashSize));
        FormatVersion = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
    }

    /// <summary>The format version the blob was written in.</summary>
    public int FormatVersion { get; }

    /// <summary>Hex SHA-256 of what the blob was built from (model, policy, data, tool version).</summary>
    public string ContentHash { get; }

    /// <summary>Key-value strings the writer recorded (model name, producer, source file).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensors the blob stores, in directory order.</summary>
    public IReadOnlyList<QuantBlobTensor> Tensors { get; }

    /// <summary>Bytes of the whole blob.</summary>
    public long Length => _bytes.Length;

    /// <summary>Bytes of the weight payload: parameters, codebooks, code tables and coded symbols of every tensor.</summary>
    public long PayloadLength => _payload.Length;

    /// <summary>Reads and verifies a blob held in memory. The array is kept, not copied.</summary>
    /// <exception cref="QuantBlobException">The blob is not a QuantTasks blob, is truncated, corrupt, or of a newer format.</exception>
    public static QuantBlob Read(byte[] blob)
    {
        if (blob is null)
        {
            throw new ArgumentNullException(nameof(blob));
        }

        return new QuantBlob(blob, BlobLayout.Verify(blob));
    }

    /// <summary>
    /// Reads and verifies a blob from a stream. The header is read and checked first; no more than the length it
    /// declares (and its CRC confirms) is ever allocated.
    /// </summary>
    /// <exception cref="QuantBlobException">The blob is not a QuantTasks blob, is truncated, corrupt, or of a newer format.</exception>
    public static QuantBlob Read(Stream stream)
    {
        if (stream is null)
        {
            throw new ArgumentNullException(nameof(stream));
        }

        var header = new byte[BlobFormat.HeaderSize];
        var got = ReadFully(stream, header, 0, header.Length);
        var (count, length) = BlobLayout.ReadPrefix(header.AsSpan(0, got));
        var tableEnd = BlobFormat.HeaderSize + (count * BlobFormat.SectionEntrySize);
        if (length < tableEnd)
        {
            throw new QuantBlobException("The blob declares a length shorter than its own section table; it is corrupt.");
        }

        // The declared length is trusted for the allocation only once the header's CRC confirms it, and only
        // if a seekable stream is long enough to hold it.
        var frame = new byte[tableEnd];
        header.CopyTo(frame, 0);
        if (ReadFully(stream, frame, BlobFormat.HeaderSize, tableEnd - BlobFormat.HeaderSize) < tableEnd - BlobFormat.HeaderSize)
        {
            throw new QuantBlobException("The blob ends inside its section table; it is truncated.");
        }

        BlobLayout.VerifyHeaderCrc(frame, count);
        if (stream.CanSeek && stream.Length - stream.Position < length - tableEnd)
        {
            throw new QuantBlobException($"The blob ends after {tableEnd + stream.Length - stream.Position} of its {length} bytes; it is truncated.");
        }

        var blob = new byte[length];
        frame.CopyTo(blob, 0);
        got = ReadFully(stream, blob, tableEnd, (int)length - tableEnd);
        if (got < length - tableEnd)
        {
            throw new QuantBlobException($"The blob ends after {tableEnd + got} of its {length} bytes; it is truncated.");
        }

        return Read(blob);
    }

    /// <summary>
    /// The ONNX model with every stored tensor decoded into its initializer, as bytes that ONNX Runtime (or any
    /// ONNX tool) loads. Built in one allocation whose size is computed from the verified directory.
    /// </summary>
    /// <exception cref="QuantBlobException">A coded stream is corrupt.</exception>
    public byte[] DecodeOnnxModel()
    {
        var graph = Slice(_graph);
        long initializers = 0;
        foreach (var entry in _entries)
        {
            var data = entry.Elements * TensorEntry.ElementSize(entry.ElementType);
            var tensor = OnnxInitializerWriter.TensorHeaderLength(entry.Name, entry.Dims, entry.ElementType, data) + data;
            initializers += OnnxInitializerWriter.InitializerHeaderLength(tensor) + tensor;
        }

        var total = graph.Length + OnnxInitializerWriter.GraphHeaderLength(initializers) + initializers;
        if (total > BlobFormat.MaxDecodedBytes)
        {
            throw new QuantBlobException($"The decoded model would take {total} bytes, more than one ONNX model can hold (2 GB).");
        }

        // Every byte is written below, so the array need not be zeroed first.
#if NET
        var model = GC.AllocateUninitializedArray<byte>((int)total);
#else
        var model = new byte[total];
#endif
        var target = model.AsSpan();
        graph.CopyTo(target);
        var at = graph.Length;
        at += OnnxInitializerWriter.WriteGraphHeader(target.Slice(at), initializers);
        foreach (var entry in _entries)
        {
            var data = (int)(entry.Elements * TensorEntry.ElementSize(entry.ElementType));
            at += OnnxInitializerWriter.WriteInitializerHeader(target.Slice(at), entry.Name, entry.Dims, entry.ElementType, data);
            DecodeInto(entry, target.Slice(at, data));
            at += data;
        }

        return model;
    }

    /// <summary>A stored tensor's values as float32, exactly as the decoded model holds them (before any narrowing to its element type).</summary>
    internal float[] DecodeFloats(string name)
    {
        var entry = _entries.First(e => e.Name == name);
        var bytes = new byte[entry.Elements * 4];
        DecodeInto(entry, bytes, elementType: 1);
        var values = new float[entry.Elements];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }

    internal IReadOnlyList<TensorEntry> Entries => _entries;

    internal ReadOnlySpan<byte> PayloadOf(TensorEntry entry) =>
        Slice(_payload).Slice((int)entry.PayloadOffset, (int)entry.PayloadLength);

    internal ReadOnlySpan<byte> Graph => Slice(_graph);

    private void DecodeInto(TensorEntry entry, Span<byte> target, int? elementType = null)
    {
        var type = elementType ?? entry.ElementType;
        var payload = PayloadOf(entry);
        if (entry.Quantizer == QuantizerKind.Float)
        {
            Dequantizer.Convert(payload, type, target);
            return;
        }

        var levels = entry.Levels;
        var parameters = payload.Slice(0, (int)entry.ParameterBytes);
        var tables = payload.Slice((int)entry.ParameterBytes, (int)entry.TableBytes);
        var stream = payload.Slice((int)(entry.ParameterBytes + entry.TableBytes));
        var symbols = ArrayPool<byte>.Shared.Rent((int)entry.Elements);
        try
        {
            var output = symbols.AsSpan(0, (int)entry.Elements);
            switch (entry.Coder)
            {
                case CoderKind.Fixed:
                    SymbolDecoder.DecodeFixed(stream, entry.Bits, output);
                    break;
                case CoderKind.Huffman:
                    var code = CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(tables, 1 << (entry.Bits * entry.Group)), BlobFormat.MaxCodeLength);
                    SymbolDecoder.DecodeGroupedHuffman(stream, code, entry.Bits, entry.Group, output);
                    break;
                default:
                    var valueBytes = CanonicalCode.PackedLengthBytes(levels);
                    var values = CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(tables, levels), BlobFormat.MaxCodeLength);
                    var runs = CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(tables.Slice(valueBytes), BlobFormat.RunAlphabet), BlobFormat.MaxCodeLength);
                    SymbolDecoder.DecodeZeroRuns(stream, runs, values, entry.ZeroSymbol, output);
                    break;
            }

            // Every symbol is below `levels` by construction: code tables have `levels` entries, fixed-width
            // symbols have `bits` bits, and the zero symbol was checked against the levels.
            var inner = 1L;
            for (var axis = entry.ChannelAxis + 1; axis < entry.Dims.Length && entry.ChannelAxis >= 0; axis++)
            {
                inner *= entry.Dims[axis];
            }

            Dequantizer.Decode(output, entry.Quantizer, parameters, levels, entry.Channels, entry.ChannelAxis >= 0 ? inner : entry.Elements, type, target);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(symbols);
        }
    }

    private ReadOnlySpan<byte> Slice(SectionRecord section) => _bytes.AsSpan((int)section.Offset, (int)section.Length);

    private static Dictionary<string, string> ReadMetadata(ReadOnlySpan<byte> section)
    {
        var reader = new SpanReader(section, "metadata");
        var count = reader.UInt32();
        if (count > section.Length)
        {
            throw new QuantBlobException("The blob's metadata is corrupt.");
        }

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < count; i++)
        {
            var key = reader.String(reader.UInt16());
            var length = reader.UInt32();
            if (length > reader.Remaining)
            {
                throw new QuantBlobException($"The blob's metadata value '{key}' claims {length} bytes, more than the section holds; it is corrupt.");
            }

            var value = reader.String((int)length);
            metadata[key] = value;
        }

        if (reader.Remaining != 0)
        {
            throw new QuantBlobException("The blob's metadata has trailing bytes; it is corrupt.");
        }

        return metadata;
    }

    private static TensorEntry[] ReadDirectory(ReadOnlySpan<byte> section, long payloadLength)
    {
        var reader = new SpanReader(section, "tensor directory");
        var count = reader.UInt32();
        if (count > section.Length)
        {
            throw new QuantBlobException("The blob's tensor directory is corrupt.");
        }

        var entries = new TensorEntry[count];
        var names = new HashSet<string>(StringComparer.Ordinal);
        long decoded = 0;
        for (var i = 0; i < count; i++)
        {
            entries[i] = TensorEntry.Read(ref reader, payloadLength);
            if (!names.Add(entries[i].Name))
            {
                throw new QuantBlobException($"Tensor '{entries[i].Name}' appears twice in the blob's directory; the blob is corrupt.");
            }

            decoded += entries[i].Elements * TensorEntry.ElementSize(entries[i].ElementType);
            if (decoded > BlobFormat.MaxDecodedBytes)
            {
                throw new QuantBlobException("The blob's tensors would take more than 2 GB decoded; it is corrupt.");
            }

            // No coder of the format gets near 1,024-fold, so a small blob that claims to decode to gigabytes
            // is corrupt or crafted; refusing it keeps decoding memory proportional to the blob.
            if (decoded > MaxExpansionSlack + (MaxExpansion * payloadLength))
            {
                throw new QuantBlobException($"The blob's tensors would take {decoded} bytes decoded from {payloadLength} bytes of payload, more than {MaxExpansion}-fold; it is corrupt.");
            }
        }

        if (reader.Remaining != 0)
        {
            throw new QuantBlobException("The blob's tensor directory has trailing bytes; it is corrupt.");
        }

        return entries;
    }

    private const long MaxExpansion = 1024;
    private const long MaxExpansionSlack = 64L << 20;

    private static int ReadFully(Stream stream, byte[] buffer, int offset, int count)
    {
        var total = 0;
        while (total < count)
        {
            var n = stream.Read(buffer, offset + total, count - total);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }

    private static string ToHex(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length * 2];
        for (var i = 0; i < bytes.Length; i++)
        {
            chars[2 * i] = "0123456789abcdef"[bytes[i] >> 4];
            chars[(2 * i) + 1] = "0123456789abcdef"[bytes[i] & 0xF];
        }

        return new string(chars);
    }
}
