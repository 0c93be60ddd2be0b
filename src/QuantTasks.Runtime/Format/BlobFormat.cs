namespace QuantTasks.Runtime.Format;

/// <summary>
/// Constants of the blob format, version 1 (documented in docs/blob-format.md). The writer in QuantTasks.Core
/// uses these same definitions.
/// </summary>
internal static class BlobFormat
{
    /// <summary>"QTBLOB" then CR LF, which a text-mode transfer would mangle, so such damage is caught at once.</summary>
    public static readonly byte[] Magic = [(byte)'Q', (byte)'T', (byte)'B', (byte)'L', (byte)'O', (byte)'B', 0x0D, 0x0A];

    /// <summary>The only version this reader reads.</summary>
    public const ushort Version = 1;

    public const int HeaderSize = 64;
    public const int SectionEntrySize = 32;
    public const int ContentHashSize = 32;

    /// <summary>Where the header's CRC-32 sits; it covers the header before it and the whole section table.</summary>
    public const int HeaderCrcOffset = 56;

    /// <summary>Longest Huffman code, in bits; the decoder's lookup table has 2^12 entries.</summary>
    public const int MaxCodeLength = 12;

    /// <summary>Zero-run coding: run symbols 0..254 are "that many zeros, then a value"; 255 is "255 zeros".</summary>
    public const int RunAlphabet = 256;

    public const int MaxRunWithValue = 254;

    /// <summary>The most bytes a decoded model may take: ONNX Runtime reads a model from one byte array.</summary>
    public const long MaxDecodedBytes = int.MaxValue - 1024 * 1024;
}

/// <summary>What a section holds.</summary>
internal enum SectionKind : uint
{
    /// <summary>Key-value strings: model name, producer, source file.</summary>
    Metadata = 1,

    /// <summary>The ONNX model, serialized, without the weights the blob stores.</summary>
    Graph = 2,

    /// <summary>One entry per stored tensor: name, shape, quantizer, coder, where its payload is.</summary>
    TensorDirectory = 3,

    /// <summary>The tensors' parameters, code tables and coded symbols, back to back.</summary>
    Payload = 4,
}

/// <summary>How a tensor's values are represented.</summary>
internal enum QuantizerKind : byte
{
    /// <summary>Stored as float32 values, not quantized.</summary>
    Float = 0,

    /// <summary>Evenly spaced levels: value = offset + symbol * scale, per channel.</summary>
    Uniform = 1,

    /// <summary>A table of 2^bits values per channel: value = codebook[channel][symbol].</summary>
    Codebook = 2,
}

/// <summary>How a quantized tensor's symbols are coded.</summary>
internal enum CoderKind : byte
{
    /// <summary>Float32 values, little-endian (quantizer <see cref="QuantizerKind.Float"/> only).</summary>
    Raw = 0,

    /// <summary>Each symbol in exactly <c>bits</c> bits, least significant bit first.</summary>
    Fixed = 1,

    /// <summary>A canonical Huffman code over the symbols.</summary>
    Huffman = 2,

    /// <summary>Runs of the zero symbol and the values between them, each with its own Huffman code (sparse tensors).</summary>
    ZeroRunHuffman = 3,
}
