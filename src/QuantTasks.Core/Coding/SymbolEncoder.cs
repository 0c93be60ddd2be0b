using QuantTasks.Runtime.Coding;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Coding;

/// <summary>A tensor's symbols as the blob stores them: the coder, its code-length tables and the bit stream.</summary>
/// <param name="Coder">Fixed width, Huffman, or zero-run Huffman.</param>
/// <param name="RunSymbol">For zero-run coding, the symbol whose runs are coded (the most frequent one).</param>
/// <param name="Tables">Packed code lengths (empty for fixed width).</param>
/// <param name="Stream">The coded symbols.</param>
/// <param name="Group">For Huffman, how many symbols one code stands for.</param>
internal sealed record CodedSymbols(CoderKind Coder, byte RunSymbol, byte[] Tables, byte[] Stream, int Group = 1)
{
    /// <summary>Bytes in the blob: tables plus stream.</summary>
    public long Bytes => Tables.Length + Stream.Length;
}

/// <summary>
/// Codes a tensor's quantization symbols, the last stage of Deep Compression. Three coders compete and the
/// smallest wins: fixed width, a canonical length-limited Huffman code, and for sparse tensors (long runs of one
/// symbol, typically the exact zeros pruning leaves) Huffman-coded run lengths between Huffman-coded values.
/// </summary>
internal static class SymbolEncoder
{
    /// <summary>The smallest coding of <paramref name="symbols"/>; with <paramref name="entropy"/> false, fixed width.</summary>
    public static CodedSymbols Encode(ReadOnlySpan<byte> symbols, int bits, bool entropy)
    {
        var fixedWidth = EncodeFixed(symbols, bits);
        if (!entropy)
        {
            return fixedWidth;
        }

        var best = fixedWidth;
        for (var group = 1; group * bits <= 8; group++)
        {
            var huffman = EncodeHuffman(symbols, bits, group);
            if (huffman.Bytes < best.Bytes)
            {
                best = huffman;
            }
        }

        // Zero-run coding only pays when one symbol dominates; skip the pass otherwise.
        var histogram = Histogram(symbols, bits);
        var runSymbol = ArgMax(histogram);
        if (histogram[runSymbol] * 2 > symbols.Length)
        {
            var runs = EncodeZeroRuns(symbols, bits, (byte)runSymbol);
            if (runs.Bytes < best.Bytes)
            {
                best = runs;
            }
        }

        return best;
    }

    public static CodedSymbols EncodeFixed(ReadOnlySpan<byte> symbols, int bits)
    {
        var writer = new BitWriter(((symbols.Length * bits) + 7) / 8);
        foreach (var symbol in symbols)
        {
            writer.Write(symbol, bits);
        }

        return new CodedSymbols(CoderKind.Fixed, 0, [], writer.ToArray());
    }

    /// <summary>
    /// Huffman codes over groups of <paramref name="group"/> consecutive symbols (the first symbol in the lowest
    /// bits of the group value; a partial last group is padded with zero symbols).
    /// </summary>
    public static CodedSymbols EncodeHuffman(ReadOnlySpan<byte> symbols, int bits, int group = 1)
    {
        var values = Grouped(symbols, bits, group);
        var histogram = Histogram(values, bits * group);
        if (symbols.Length == 0)
        {
            histogram[0] = 1;
        }

        var lengths = HuffmanLengths.Build(histogram, BlobFormat.MaxCodeLength);
        var code = CanonicalCode.FromLengths(lengths, BlobFormat.MaxCodeLength);
        var tables = new byte[CanonicalCode.PackedLengthBytes(lengths.Length)];
        CanonicalCode.PackLengths(lengths, tables);
        if (code.OnlySymbol >= 0)
        {
            return new CodedSymbols(CoderKind.Huffman, 0, tables, [], group);
        }

        var writer = new BitWriter((int)(HuffmanLengths.CodedBits(histogram, lengths) / 8) + 1);
        foreach (var value in values)
        {
            writer.Write(code.Codes[value], lengths[value]);
        }

        return new CodedSymbols(CoderKind.Huffman, 0, tables, writer.ToArray(), group);
    }

    private static byte[] Grouped(ReadOnlySpan<byte> symbols, int bits, int group)
    {
        if (group == 1)
        {
            return symbols.ToArray();
        }

        var values = new byte[(symbols.Length + group - 1) / group];
        for (var i = 0; i < symbols.Length; i++)
        {
            values[i / group] |= (byte)(symbols[i] << (bits * (i % group)));
        }

        return values;
    }

    public static CodedSymbols EncodeZeroRuns(ReadOnlySpan<byte> symbols, int bits, byte runSymbol)
    {
        var levels = 1 << bits;
        var pairs = RunPairs(symbols, runSymbol);
        var runHistogram = new long[BlobFormat.RunAlphabet];
        var valueHistogram = new long[levels];
        foreach (var (run, value) in pairs)
        {
            runHistogram[run]++;
            if (value >= 0)
            {
                valueHistogram[value]++;
            }
        }

        // A code table needs at least one symbol even when no value (or no run) is ever coded.
        if (valueHistogram.All(c => c == 0))
        {
            valueHistogram[runSymbol == 0 ? 1 % levels : 0] = 1;
        }

        if (runHistogram.All(c => c == 0))
        {
            runHistogram[0] = 1;
        }

        var valueLengths = HuffmanLengths.Build(valueHistogram, BlobFormat.MaxCodeLength);
        var runLengths = HuffmanLengths.Build(runHistogram, BlobFormat.MaxCodeLength);
        var values = CanonicalCode.FromLengths(valueLengths, BlobFormat.MaxCodeLength);
        var runs = CanonicalCode.FromLengths(runLengths, BlobFormat.MaxCodeLength);
        var tables = new byte[CanonicalCode.PackedLengthBytes(levels) + CanonicalCode.PackedLengthBytes(BlobFormat.RunAlphabet)];
        CanonicalCode.PackLengths(valueLengths, tables);
        CanonicalCode.PackLengths(runLengths, tables.AsSpan(CanonicalCode.PackedLengthBytes(levels)));

        var writer = new BitWriter();
        foreach (var (run, value) in pairs)
        {
            if (runs.OnlySymbol < 0)
            {
                writer.Write(runs.Codes[run], runLengths[run]);
            }

            if (value >= 0 && values.OnlySymbol < 0)
            {
                writer.Write(values.Codes[value], valueLengths[value]);
            }
        }

        return new CodedSymbols(CoderKind.ZeroRunHuffman, runSymbol, tables, writer.ToArray());
    }

    /// <summary>How often each of the 2^bits symbols occurs.</summary>
    public static long[] Histogram(ReadOnlySpan<byte> symbols, int bits)
    {
        var histogram = new long[1 << bits];
        foreach (var symbol in symbols)
        {
            histogram[symbol]++;
        }

        return histogram;
    }

    // The (run, value) pairs of zero-run coding: run symbols 0..254 are followed by a value, 255 is not; a final
    // run that reaches the end of the tensor has no value (-1).
    private static List<(int Run, int Value)> RunPairs(ReadOnlySpan<byte> symbols, byte runSymbol)
    {
        var pairs = new List<(int, int)>();
        var run = 0;
        foreach (var symbol in symbols)
        {
            if (symbol == runSymbol)
            {
                run++;
                continue;
            }

            for (; run > BlobFormat.MaxRunWithValue; run -= BlobFormat.MaxRunWithValue + 1)
            {
                pairs.Add((BlobFormat.MaxRunWithValue + 1, -1));
            }

            pairs.Add((run, symbol));
            run = 0;
        }

        for (; run > BlobFormat.MaxRunWithValue; run -= BlobFormat.MaxRunWithValue + 1)
        {
            pairs.Add((BlobFormat.MaxRunWithValue + 1, -1));
        }

        if (run > 0)
        {
            pairs.Add((run, -1));
        }

        return pairs;
    }

    private static int ArgMax(long[] values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }
}
