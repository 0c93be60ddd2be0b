using System;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Runtime.Coding;

/// <summary>
/// Turns coded streams back into symbols (one byte each). This is on the app's startup path, so the Huffman
/// decoder is table-driven: it keeps at least 56 unread bits in a 64-bit register and resolves four codes per
/// refill with one table lookup each. Every stream must be consumed exactly: a stream that ends early, holds a
/// bit pattern no code starts with, or has bytes left over is rejected, never decoded into wrong symbols.
/// </summary>
internal static unsafe class SymbolDecoder
{
    /// <summary>Decodes symbols of a fixed width of <paramref name="bits"/> bits, least significant bit first.</summary>
    public static void DecodeFixed(ReadOnlySpan<byte> stream, int bits, Span<byte> output)
    {
        var expected = ((long)output.Length * bits + 7) / 8;
        if (stream.Length != expected)
        {
            throw new QuantBlobException($"A fixed-width stream of {output.Length} {bits}-bit symbols needs {expected} bytes but has {stream.Length}.");
        }

        var mask = (1UL << bits) - 1;
        ulong buffer = 0;
        var count = 0;
        var position = 0;
        for (var i = 0; i < output.Length; i++)
        {
            while (count < bits)
            {
                buffer |= (ulong)stream[position++] << count;
                count += 8;
            }

            output[i] = (byte)(buffer & mask);
            buffer >>= bits;
            count -= bits;
        }
    }

    /// <summary>
    /// Decodes Huffman-coded groups of <paramref name="group"/> symbols of <paramref name="bits"/> bits each: a
    /// code stands for a group value whose lowest bits are the group's first symbol. The last group may be
    /// partial; its missing symbols must be zero. Each decoded group is written with one 8-byte store from a
    /// table that spreads the group value over its (up to 8) symbols.
    /// </summary>
    public static void DecodeGroupedHuffman(ReadOnlySpan<byte> stream, CanonicalCode code, int bits, int group, Span<byte> output)
    {
        if (group == 1)
        {
            DecodeHuffman(stream, code, output);
            return;
        }

        var mask = (1 << bits) - 1;
        var spread = new ulong[1 << (bits * group)];
        for (var value = 0; value < spread.Length; value++)
        {
            for (var j = 0; j < group; j++)
            {
                spread[value] |= (ulong)((value >> (bits * j)) & mask) << (8 * j);
            }
        }

        if (code.OnlySymbol >= 0)
        {
            if (stream.Length != 0)
            {
                throw new QuantBlobException("A one-symbol stream must be empty.");
            }

            for (var i = 0; i < output.Length; i += group)
            {
                WriteGroup(output, i, spread[code.OnlySymbol], group);
            }

            return;
        }

        var table = code.DecodeTable();
        var reader = new BitReader(stream);
        fixed (byte* source = stream)
        fixed (ushort* lookup = table)
        fixed (ulong* spreadTable = spread)
        fixed (byte* target = output)
        {
            reader.Source = source;
            var tableMask = (1UL << code.MaxLength) - 1;
            var n = output.Length;
            var i = 0;
            var littleEndian = BitConverter.IsLittleEndian;

            // Four codes per refill, each stored as 8 bytes; stop while 8 spare bytes remain for the last store.
            while (littleEndian && i + (4 * group) + 8 <= n && reader.CanRefillFast)
            {
                reader.RefillFast();
                *(ulong*)(target + i) = spreadTable[Next(ref reader, lookup, tableMask)];
                i += group;
                *(ulong*)(target + i) = spreadTable[Next(ref reader, lookup, tableMask)];
                i += group;
                *(ulong*)(target + i) = spreadTable[Next(ref reader, lookup, tableMask)];
                i += group;
                *(ulong*)(target + i) = spreadTable[Next(ref reader, lookup, tableMask)];
                i += group;
            }

            for (; i < n; i += group)
            {
                reader.RefillSlow();
                WriteGroup(output, i, spreadTable[NextChecked(ref reader, lookup, tableMask)], group);
            }

            reader.CheckFullyConsumed();
        }
    }

    // Writes a group's symbols; in a partial last group, the symbols past the end must be zero.
    private static void WriteGroup(Span<byte> output, int start, ulong symbols, int group)
    {
        for (var j = 0; j < group; j++, symbols >>= 8)
        {
            if (start + j < output.Length)
            {
                output[start + j] = (byte)symbols;
            }
            else if ((symbols & 0xFF) != 0)
            {
                throw new QuantBlobException("The last group of a coded stream has symbols past the end of the tensor; the blob is corrupt.");
            }
        }
    }

    /// <summary>Decodes Huffman-coded symbols.</summary>
    public static void DecodeHuffman(ReadOnlySpan<byte> stream, CanonicalCode code, Span<byte> output)
    {
        if (code.OnlySymbol >= 0)
        {
            // One symbol: coded in zero bits.
            if (stream.Length != 0)
            {
                throw new QuantBlobException("A one-symbol stream must be empty.");
            }

            output.Fill((byte)code.OnlySymbol);
            return;
        }

        var table = code.DecodeTable();
        var reader = new BitReader(stream);
        fixed (byte* source = stream)
        fixed (ushort* lookup = table)
        fixed (byte* target = output)
        {
            reader.Source = source;
            var mask = (1UL << code.MaxLength) - 1;
            var n = output.Length;
            var i = 0;

            // Fast loop: four codes of at most 12 bits fit in the 56 bits a refill guarantees.
            while (i + 4 <= n && reader.CanRefillFast)
            {
                reader.RefillFast();
                target[i] = Next(ref reader, lookup, mask);
                target[i + 1] = Next(ref reader, lookup, mask);
                target[i + 2] = Next(ref reader, lookup, mask);
                target[i + 3] = Next(ref reader, lookup, mask);
                i += 4;
            }

            for (; i < n; i++)
            {
                reader.RefillSlow();
                target[i] = NextChecked(ref reader, lookup, mask);
            }

            reader.CheckFullyConsumed();
        }
    }

    /// <summary>
    /// Decodes a zero-run stream: for each run, a run symbol (0 to 254: that many zero symbols followed by one
    /// coded value; 255: 255 zero symbols and no value), until the output is full.
    /// </summary>
    public static void DecodeZeroRuns(ReadOnlySpan<byte> stream, CanonicalCode runs, CanonicalCode values, byte zeroSymbol, Span<byte> output)
    {
        var runTable = runs.DecodeTable();
        var valueTable = values.DecodeTable();
        var reader = new BitReader(stream);
        fixed (byte* source = stream)
        fixed (ushort* runLookup = runTable)
        fixed (ushort* valueLookup = valueTable)
        {
            reader.Source = source;
            var runMask = (1UL << runs.MaxLength) - 1;
            var valueMask = (1UL << values.MaxLength) - 1;
            var i = 0;
            while (i < output.Length)
            {
                reader.RefillSlow();
                int zeros = runs.OnlySymbol >= 0 ? runs.OnlySymbol : NextChecked(ref reader, runLookup, runMask);
                if (zeros > output.Length - i)
                {
                    throw new QuantBlobException("A zero run overruns the tensor; the stream is corrupt.");
                }

                output.Slice(i, zeros).Fill(zeroSymbol);
                i += zeros;
                if (zeros > BlobFormat.MaxRunWithValue || i == output.Length)
                {
                    continue;
                }

                reader.RefillSlow();
                output[i++] = values.OnlySymbol >= 0 ? (byte)values.OnlySymbol : NextChecked(ref reader, valueLookup, valueMask);
            }

            reader.CheckFullyConsumed();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte Next(ref BitReader reader, ushort* lookup, ulong mask)
    {
        int entry = lookup[reader.Buffer & mask];
        if (entry == 0)
        {
            throw InvalidCode();
        }

        reader.Consume(entry & 0xF);
        return (byte)(entry >> 4);
    }

    private static byte NextChecked(ref BitReader reader, ushort* lookup, ulong mask)
    {
        int entry = lookup[reader.Buffer & mask];
        if (entry == 0)
        {
            throw InvalidCode();
        }

        var length = entry & 0xF;
        if (length > reader.Available)
        {
            throw new QuantBlobException("A coded stream ends in the middle of a code; the blob is truncated or corrupt.");
        }

        reader.Consume(length);
        return (byte)(entry >> 4);
    }

    private static QuantBlobException InvalidCode() =>
        new("A coded stream holds a bit pattern that no code starts with; the blob is corrupt.");

    /// <summary>Bits of a byte stream, least significant first, in a 64-bit register.</summary>
    private struct BitReader
    {
        private readonly int _length;
        private int _position;

        public BitReader(ReadOnlySpan<byte> stream)
        {
            _length = stream.Length;
            _position = 0;
            Buffer = 0;
            Available = 0;
            Source = null;
        }

        public byte* Source;

        /// <summary>The unread bits, the next one lowest; bits past the end of the stream read as zero.</summary>
        public ulong Buffer;

        /// <summary>How many of <see cref="Buffer"/>'s bits are real stream bits.</summary>
        public int Available;

        public readonly bool CanRefillFast => _position + 8 <= _length;

        /// <summary>Tops the register up to at least 56 bits with one unaligned 8-byte read.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void RefillFast()
        {
            var word = *(ulong*)(Source + _position);
            if (!BitConverter.IsLittleEndian)
            {
                word = BinaryPrimitives.ReverseEndianness(word);
            }

            Buffer |= word << Available;
            _position += (63 - Available) >> 3;
            Available |= 56;
        }

        /// <summary>Tops the register up byte by byte, near the end of the stream.</summary>
        public void RefillSlow()
        {
            if (CanRefillFast)
            {
                RefillFast();
                return;
            }

            while (Available <= 56 && _position < _length)
            {
                Buffer |= (ulong)Source[_position++] << Available;
                Available += 8;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Consume(int bits)
        {
            Buffer >>= bits;
            Available -= bits;
        }

        /// <summary>Checks that the codes used every byte of the stream, and no more.</summary>
        public readonly void CheckFullyConsumed()
        {
            var consumedBits = ((long)_position * 8) - Available;
            if (Available < 0 || (consumedBits + 7) / 8 != _length)
            {
                throw new QuantBlobException(
                    $"A coded stream of {_length} bytes was not consumed exactly (the codes used {consumedBits} bits); the blob is corrupt.");
            }
        }
    }
}
