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

/// <summary>A coder choice and the exact bytes it takes (tables plus stream).</summary>
/// <param name="Coder">The coder.</param>
/// <param name="Group">Symbols per Huffman code.</param>
/// <param name="RunSymbol">The run symbol of zero-run coding.</param>
/// <param name="Bytes">Tables plus stream.</param>
internal readonly record struct CodingPlan(CoderKind Coder, int Group, byte RunSymbol, long Bytes);

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
        var plan = Plan(symbols, bits, entropy);
        var coded = plan.Coder switch
        {
            CoderKind.Huffman => EncodeHuffman(symbols, bits, plan.Group),
            CoderKind.ZeroRunHuffman => EncodeZeroRuns(symbols, bits, plan.RunSymbol),
            _ => EncodeFixed(symbols, bits),
        };
        if (coded.Bytes != plan.Bytes)
        {
            throw new InvalidOperationException($"The size model predicted {plan.Bytes} bytes for a {plan.Coder} stream; the encoder wrote {coded.Bytes}.");
        }

        return coded;
    }

    /// <summary>
    /// Which coder <see cref="Encode"/> will use and exactly how many bytes (tables plus stream) it will write,
    /// computed from symbol histograms without writing the stream: fixed width, Huffman over groups of one or
    /// more symbols, and zero-run coding when one symbol covers more than half of the tensor. Ties go to the
    /// simpler coder.
    /// </summary>
    public static CodingPlan Plan(ReadOnlySpan<byte> symbols, int bits, bool entropy)
    {
        var best = new CodingPlan(CoderKind.Fixed, 1, 0, ((symbols.Length * (long)bits) + 7) / 8);
        if (!entropy)
        {
            return best;
        }

        // One histogram serves the ungrouped Huffman code and the zero-run test.
        var histogram = Histogram(symbols, bits);
        for (var group = 1; group * bits <= 8; group++)
        {
            var bytes = HuffmanBytes(group == 1 ? histogram : Histogram(Grouped(symbols, bits, group), bits * group), symbols.Length);
            if (bytes < best.Bytes)
            {
                best = new CodingPlan(CoderKind.Huffman, group, 0, bytes);
            }
        }

        // Zero-run coding only pays when one symbol dominates; skip the pass otherwise.
        var runSymbol = ArgMax(histogram);
        if (histogram[runSymbol] * 2 > symbols.Length)
        {
            var bytes = ZeroRunBytes(symbols, bits, (byte)runSymbol);
            if (bytes < best.Bytes)
            {
                best = new CodingPlan(CoderKind.ZeroRunHuffman, 1, (byte)runSymbol, bytes);
            }
        }

        return best;
    }

    private static long HuffmanBytes(long[] histogram, int length)
    {
        if (length == 0)
        {
            histogram = [1, .. histogram.AsSpan(1)];
        }

        var lengths = HuffmanLengths.Build(histogram, BlobFormat.MaxCodeLength);
        var code = CanonicalCode.FromLengths(lengths, BlobFormat.MaxCodeLength);
        var tables = CanonicalCode.PackedLengthBytes(lengths.Length);
        return tables + (code.OnlySymbol >= 0 ? 0 : (HuffmanLengths.CodedBits(histogram, lengths) + 7) / 8);
    }

    private static long ZeroRunBytes(ReadOnlySpan<byte> symbols, int bits, byte runSymbol)
    {
        var levels = 1 << bits;
        var (runHistogram, valueHistogram) = RunHistograms(symbols, bits, runSymbol);
        var valueLengths = HuffmanLengths.Build(valueHistogram, BlobFormat.MaxCodeLength);
        var runLengths = HuffmanLengths.Build(runHistogram, BlobFormat.MaxCodeLength);
        var values = CanonicalCode.FromLengths(valueLengths, BlobFormat.MaxCodeLength);
        var runs = CanonicalCode.FromLengths(runLengths, BlobFormat.MaxCodeLength);
        long streamBits = 0;
        for (var r = 0; r < runHistogram.Length && runs.OnlySymbol < 0; r++)
        {
            streamBits += runHistogram[r] * runLengths[r];
        }

        for (var v = 0; v < valueHistogram.Length && values.OnlySymbol < 0; v++)
        {
            streamBits += valueHistogram[v] * valueLengths[v];
        }

        // The histograms above may hold a placeholder count for a table that codes nothing; it has no stream
        // bits only when that table has a single symbol, which is exactly when the placeholder is added.
        return CanonicalCode.PackedLengthBytes(levels) + CanonicalCode.PackedLengthBytes(BlobFormat.RunAlphabet) + ((streamBits + 7) / 8);
    }

    /// <summary>The histograms of run symbols and of values, with a placeholder in a table that would be empty.</summary>
    private static (long[] Runs, long[] Values) RunHistograms(ReadOnlySpan<byte> symbols, int bits, byte runSymbol)
    {
        var levels = 1 << bits;
        var runHistogram = new long[BlobFormat.RunAlphabet];
        var valueHistogram = new long[levels];
        foreach (var (run, value) in RunPairs(symbols, runSymbol))
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

        return (runHistogram, valueHistogram);
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
        var (runHistogram, valueHistogram) = RunHistograms(symbols, bits, runSymbol);
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
