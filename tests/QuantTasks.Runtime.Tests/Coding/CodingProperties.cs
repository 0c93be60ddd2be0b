using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using QuantTasks.Coding;
using QuantTasks.Runtime.Coding;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Runtime.Tests.Coding;

/// <summary>Encoder and decoder are exact inverses, for every coder, width and distribution.</summary>
public class CodingProperties
{
    /// <summary>Symbols of 1 to 8 bits from skewed distributions (a few symbols dominate, as in weights).</summary>
    public static Arbitrary<(int Bits, byte[] Symbols)> SymbolStreams() =>
        (from bits in Gen.Choose(1, 8)
         from spread in Gen.Choose(0, 6)
         from length in Gen.Choose(0, 3000)
         from raw in Gen.ArrayOf(Gen.Choose(0, int.MaxValue), length)
         select (bits, raw.Select(r => Skewed(r, bits, spread)).ToArray())).ToArbitrary();

    [Property(Arbitrary = [typeof(CodingProperties)], MaxTest = 300)]
    public bool Huffman_decodes_what_it_encoded((int Bits, byte[] Symbols) input)
    {
        var coded = SymbolEncoder.EncodeHuffman(input.Symbols, input.Bits);
        return Decode(coded, input.Bits, input.Symbols.Length).SequenceEqual(input.Symbols);
    }

    [Property(Arbitrary = [typeof(CodingProperties)], MaxTest = 300)]
    public bool Grouped_Huffman_decodes_what_it_encoded((int Bits, byte[] Symbols) input)
    {
        var ok = true;
        for (var group = 2; group * input.Bits <= 8; group++)
        {
            var coded = SymbolEncoder.EncodeHuffman(input.Symbols, input.Bits, group);
            ok &= Decode(coded, input.Bits, input.Symbols.Length).SequenceEqual(input.Symbols);
        }

        return ok;
    }

    [Property(Arbitrary = [typeof(CodingProperties)], MaxTest = 300)]
    public bool Fixed_width_decodes_what_it_encoded((int Bits, byte[] Symbols) input)
    {
        var coded = SymbolEncoder.EncodeFixed(input.Symbols, input.Bits);
        return Decode(coded, input.Bits, input.Symbols.Length).SequenceEqual(input.Symbols);
    }

    [Property(Arbitrary = [typeof(CodingProperties)], MaxTest = 300)]
    public bool Zero_runs_decode_what_they_encoded((int Bits, byte[] Symbols) input)
    {
        var runSymbol = input.Symbols.Length == 0 ? (byte)0 : input.Symbols.GroupBy(s => s).MaxBy(g => g.Count())!.Key;
        var coded = SymbolEncoder.EncodeZeroRuns(input.Symbols, input.Bits, runSymbol);
        return Decode(coded, input.Bits, input.Symbols.Length).SequenceEqual(input.Symbols);
    }

    [Property(Arbitrary = [typeof(CodingProperties)], MaxTest = 300)]
    public bool The_chosen_coder_is_never_larger_than_fixed_width((int Bits, byte[] Symbols) input)
    {
        var best = SymbolEncoder.Encode(input.Symbols, input.Bits, entropy: true);
        return best.Bytes <= SymbolEncoder.EncodeFixed(input.Symbols, input.Bits).Bytes
            && Decode(best, input.Bits, input.Symbols.Length).SequenceEqual(input.Symbols);
    }

    [Fact]
    public void A_one_symbol_stream_is_coded_in_zero_bits()
    {
        var symbols = Enumerable.Repeat((byte)5, 10_000).ToArray();

        var coded = SymbolEncoder.EncodeHuffman(symbols, 4);

        Assert.Empty(coded.Stream);
        Assert.Equal(8, coded.Tables.Length);
        Assert.Equal(symbols, Decode(coded, 4, symbols.Length));
    }

    [Fact]
    public void Long_runs_of_a_sparse_tensor_take_far_less_than_plain_Huffman()
    {
        var random = new Random(7);
        var symbols = new byte[100_000];
        for (var i = 0; i < symbols.Length; i++)
        {
            symbols[i] = random.NextDouble() < 0.95 ? (byte)8 : (byte)random.Next(16);
        }

        var runs = SymbolEncoder.EncodeZeroRuns(symbols, 4, 8);
        var huffman = SymbolEncoder.EncodeHuffman(symbols, 4);

        Assert.True(runs.Bytes < huffman.Bytes * 0.7, $"zero runs {runs.Bytes} B, Huffman {huffman.Bytes} B");
        Assert.Equal(CoderKind.ZeroRunHuffman, SymbolEncoder.Encode(symbols, 4, entropy: true).Coder);
        Assert.Equal(symbols, Decode(runs, 4, symbols.Length));
    }

    [Fact]
    public void Fibonacci_frequencies_are_limited_to_12_bits_and_still_decode()
    {
        // Fibonacci weights make an unlimited Huffman code as deep as the alphabet.
        var symbols = new List<byte>();
        long a = 1, b = 1;
        for (var s = 0; s < 24; s++)
        {
            symbols.AddRange(Enumerable.Repeat((byte)s, (int)Math.Min(a, 20_000)));
            (a, b) = (b, a + b);
        }

        var coded = SymbolEncoder.EncodeHuffman(symbols.ToArray(), 5);
        var lengths = CanonicalCode.UnpackLengths(coded.Tables, 32);

        Assert.Equal(BlobFormat.MaxCodeLength, lengths.Max());
        Assert.True(lengths.Where(l => l > 0).Sum(l => Math.Pow(2, -l)) <= 1.0);
        Assert.Equal(symbols, Decode(coded, 5, symbols.Count));
    }

    [Property(MaxTest = 200)]
    public bool Package_merge_is_optimal_against_brute_force(PositiveInt[] weights)
    {
        // Up to 5 symbols and codes of at most 3 bits: small enough to try every assignment of lengths.
        var histogram = weights.Take(5).Select(w => (long)(w.Get % 1000) + 1).ToArray();
        if (histogram.Length < 3)
        {
            return true;
        }

        const int limit = 3;
        var lengths = HuffmanLengths.Build(histogram, limit);
        var best = long.MaxValue;
        foreach (var candidate in Assignments(histogram.Length, limit))
        {
            if (candidate.Sum(l => 1.0 / (1 << l)) <= 1.0)
            {
                best = Math.Min(best, candidate.Select((l, i) => l * histogram[i]).Sum());
            }
        }

        return lengths.Max() <= limit && HuffmanLengths.CodedBits(histogram, lengths) == best;
    }

    [Fact]
    public void Corrupt_streams_are_rejected_not_decoded_into_wrong_symbols()
    {
        var symbols = Enumerable.Range(0, 5000).Select(i => (byte)((i * 7) % 13 % 16)).ToArray();
        var coded = SymbolEncoder.EncodeHuffman(symbols, 4);
        var code = CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(coded.Tables, 16), BlobFormat.MaxCodeLength);
        var output = new byte[symbols.Length];

        Assert.Throws<QuantBlobException>(() => SymbolDecoder.DecodeHuffman(coded.Stream.AsSpan(0, coded.Stream.Length - 1), code, output));
        Assert.Throws<QuantBlobException>(() => SymbolDecoder.DecodeHuffman(coded.Stream.Concat(new byte[] { 0 }).ToArray(), code, output));
        Assert.Throws<QuantBlobException>(() => SymbolDecoder.DecodeFixed(new byte[3], 4, output));
    }

    [Fact]
    public void Over_subscribed_lengths_are_rejected() =>
        Assert.Throws<QuantBlobException>(() => CanonicalCode.FromLengths([1, 1, 1], BlobFormat.MaxCodeLength));

    private static byte[] Decode(CodedSymbols coded, int bits, int count)
    {
        var output = new byte[count];
        var levels = 1 << bits;
        switch (coded.Coder)
        {
            case CoderKind.Fixed:
                SymbolDecoder.DecodeFixed(coded.Stream, bits, output);
                break;
            case CoderKind.Huffman:
                if (count == 0)
                {
                    return output;
                }

                var groupLevels = 1 << (bits * coded.Group);
                SymbolDecoder.DecodeGroupedHuffman(coded.Stream, CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(coded.Tables, groupLevels), BlobFormat.MaxCodeLength), bits, coded.Group, output);
                break;
            default:
                var valueBytes = CanonicalCode.PackedLengthBytes(levels);
                var values = CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(coded.Tables, levels), BlobFormat.MaxCodeLength);
                var runs = count == 0 ? values : CanonicalCode.FromLengths(CanonicalCode.UnpackLengths(coded.Tables.AsSpan(valueBytes), BlobFormat.RunAlphabet), BlobFormat.MaxCodeLength);
                SymbolDecoder.DecodeZeroRuns(coded.Stream, runs, values, coded.RunSymbol, output);
                break;
        }

        return output;
    }

    // A geometric-like draw: small spreads concentrate the mass on a few symbols.
    private static byte Skewed(int random, int bits, int spread)
    {
        var levels = 1 << bits;
        var value = spread == 0 ? random % levels : (int)(Math.Abs(Math.Log((random % 1_000_000 + 1) / 1_000_001.0)) * spread);
        return (byte)(value % levels);
    }

    private static IEnumerable<int[]> Assignments(int symbols, int limit)
    {
        var total = (int)Math.Pow(limit, symbols);
        for (var index = 0; index < total; index++)
        {
            var lengths = new int[symbols];
            var rest = index;
            for (var s = 0; s < symbols; s++)
            {
                lengths[s] = (rest % limit) + 1;
                rest /= limit;
            }

            yield return lengths;
        }
    }
}
