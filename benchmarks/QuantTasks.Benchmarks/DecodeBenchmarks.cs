using System.IO.Compression;
using BenchmarkDotNet.Attributes;
using QuantTasks.Coding;
using QuantTasks.Runtime.Coding;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Benchmarks;

/// <summary>
/// Decoding the same symbol stream (the MLP's first layer, 200,704 symbols) three ways: the coder the blob
/// chooses (table-driven Huffman, grouped for narrow symbols), .NET's Brotli decoder and .NET's zlib decoder
/// over the symbols as bytes (one byte per symbol, their best compression settings).
/// </summary>
[MemoryDiagnoser]
[SimpleJob(warmupCount: 3, iterationCount: 15)]
public class DecodeBenchmarks
{
    private byte[] _symbols = [];
    private CodedSymbols _huffman = null!;
    private CanonicalCode _code = null!;
    private byte[] _brotli = [];
    private byte[] _zlib = [];
    private byte[] _output = [];

    [Params(2, 4, 8)]
    public int Bits { get; set; }

    public int Symbols => _symbols.Length;

    [GlobalSetup]
    public void Setup()
    {
        var tensor = Workloads.Quantize(Workloads.Load("mlp.onnx"), Bits)[0];
        _symbols = tensor.Symbols;
        _huffman = SymbolEncoder.Encode(_symbols, Bits, entropy: true);
        _code = CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(_huffman.Tables, 1 << (Bits * _huffman.Group)), BlobFormat.MaxCodeLength);
        _brotli = new byte[BrotliEncoder.GetMaxCompressedLength(_symbols.Length)];
        BrotliEncoder.TryCompress(_symbols, _brotli, out var written, quality: 11, window: 22);
        _brotli = _brotli[..written];
        using var buffer = new MemoryStream();
        using (var zlib = new ZLibStream(buffer, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            zlib.Write(_symbols);
        }

        _zlib = buffer.ToArray();
        _output = new byte[_symbols.Length];
    }

    [Benchmark(Baseline = true)]
    public void Huffman() => SymbolDecoder.DecodeGroupedHuffman(_huffman.Stream, _code, Bits, _huffman.Group, _output);

    [Benchmark]
    public void Brotli() => BrotliDecoder.TryDecompress(_brotli, _output, out _);

    [Benchmark]
    public void ZLib()
    {
        using var zlib = new ZLibStream(new MemoryStream(_zlib), CompressionMode.Decompress);
        zlib.ReadExactly(_output);
    }

    /// <summary>Compressed sizes of the same stream, for the report.</summary>
    public (long Huffman, long Brotli, long ZLib) Sizes() => (_huffman.Bytes, _brotli.Length, _zlib.Length);
}
