using System;

namespace QuantTasks.Runtime.Coding;

/// <summary>
/// A canonical prefix code: given each symbol's code length, codes are assigned in order of (length, symbol),
/// so the lengths alone describe the code and are all a blob stores. Bits are read least significant first,
/// so the decoder's table is indexed by the bit-reversed code.
/// </summary>
internal sealed class CanonicalCode
{
    private CanonicalCode(byte[] lengths, uint[] codes, int maxLength, int usedSymbols, int onlySymbol)
    {
        Lengths = lengths;
        Codes = codes;
        MaxLength = maxLength;
        UsedSymbols = usedSymbols;
        OnlySymbol = onlySymbol;
    }

    /// <summary>Code length of each symbol; 0 for symbols that do not occur.</summary>
    public byte[] Lengths { get; }

    /// <summary>Each symbol's code, bit-reversed so that it can be written least significant bit first.</summary>
    public uint[] Codes { get; }

    /// <summary>The longest code length.</summary>
    public int MaxLength { get; }

    /// <summary>How many symbols have a code.</summary>
    public int UsedSymbols { get; }

    /// <summary>
    /// When exactly one symbol occurs, that symbol (it is coded in zero bits: the stream is that symbol repeated);
    /// otherwise -1.
    /// </summary>
    public int OnlySymbol { get; }

    /// <summary>Builds the code from code lengths, rejecting lengths that no prefix code has.</summary>
    /// <exception cref="QuantBlobException">A length is over the maximum, or the lengths over-subscribe the code space.</exception>
    public static CanonicalCode FromLengths(byte[] lengths, int maxAllowed)
    {
        var countPerLength = new int[maxAllowed + 1];
        var maxLength = 0;
        var used = 0;
        var only = -1;
        for (var symbol = 0; symbol < lengths.Length; symbol++)
        {
            int length = lengths[symbol];
            if (length == 0)
            {
                continue;
            }

            if (length > maxAllowed)
            {
                throw new QuantBlobException($"A code length of {length} bits is over the format's maximum of {maxAllowed}.");
            }

            countPerLength[length]++;
            maxLength = Math.Max(maxLength, length);
            used++;
            only = symbol;
        }

        if (used == 0)
        {
            throw new QuantBlobException("A code table has no symbols.");
        }

        // Kraft's inequality, in units of 2^-maxAllowed: a prefix code's lengths sum to at most 1.
        long kraft = 0;
        for (var length = 1; length <= maxAllowed; length++)
        {
            kraft += (long)countPerLength[length] << (maxAllowed - length);
        }

        if (kraft > 1L << maxAllowed)
        {
            throw new QuantBlobException("A code table's lengths over-subscribe the code space; the blob is corrupt.");
        }

        var next = new uint[maxAllowed + 2];
        uint code = 0;
        for (var length = 1; length <= maxAllowed; length++)
        {
            code = (code + (uint)countPerLength[length - 1]) << 1;
            next[length] = code;
        }

        var codes = new uint[lengths.Length];
        for (var symbol = 0; symbol < lengths.Length; symbol++)
        {
            int length = lengths[symbol];
            if (length != 0)
            {
                codes[symbol] = Reverse(next[length]++, length);
            }
        }

        return new CanonicalCode(lengths, codes, maxLength, used, used == 1 ? only : -1);
    }

    /// <summary>
    /// The decoding table: indexed by the next <see cref="MaxLength"/> bits of the stream (least significant
    /// first), each entry is <c>(symbol &lt;&lt; 4) | length</c>, or 0 for bit patterns no code starts with.
    /// </summary>
    public ushort[] DecodeTable()
    {
        var table = new ushort[1 << MaxLength];
        for (var symbol = 0; symbol < Lengths.Length; symbol++)
        {
            int length = Lengths[symbol];
            if (length == 0)
            {
                continue;
            }

            var entry = (ushort)((symbol << 4) | length);
            for (var index = (int)Codes[symbol]; index < table.Length; index += 1 << length)
            {
                table[index] = entry;
            }
        }

        return table;
    }

    /// <summary>Reads code lengths stored two per byte, low nibble first.</summary>
    public static byte[] UnpackLengths(ReadOnlySpan<byte> packed, int count)
    {
        var lengths = new byte[count];
        for (var i = 0; i < count; i++)
        {
            var b = packed[i >> 1];
            lengths[i] = (byte)((i & 1) == 0 ? b & 0xF : b >> 4);
        }

        return lengths;
    }

    /// <summary>Bytes that <paramref name="count"/> code lengths take when packed two per byte.</summary>
    public static int PackedLengthBytes(int count) => (count + 1) / 2;

    /// <summary>Packs code lengths two per byte, low nibble first.</summary>
    public static void PackLengths(ReadOnlySpan<byte> lengths, Span<byte> packed)
    {
        packed.Slice(0, PackedLengthBytes(lengths.Length)).Clear();
        for (var i = 0; i < lengths.Length; i++)
        {
            packed[i >> 1] |= (byte)((i & 1) == 0 ? lengths[i] : lengths[i] << 4);
        }
    }

    private static uint Reverse(uint code, int length)
    {
        uint reversed = 0;
        for (var i = 0; i < length; i++)
        {
            reversed = (reversed << 1) | ((code >> i) & 1);
        }

        return reversed;
    }
}
