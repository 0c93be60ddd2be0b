using System;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Runtime.Quantization;

/// <summary>
/// Symbols back to values. Each channel's levels are first expanded into a small table (2^bits floats), so
/// turning a symbol into a value is one lookup; the writer computes its reconstruction with the same
/// <see cref="LevelTable"/>, so what the build measured is exactly what the app runs.
/// </summary>
internal static class Dequantizer
{
    /// <summary>
    /// The value of every (channel, symbol): <c>table[channel * levels + symbol]</c>. Uniform parameters are
    /// (scale, offset) pairs per channel, value = offset + symbol * scale in float32; codebooks are stored as is.
    /// </summary>
    public static float[] LevelTable(QuantizerKind quantizer, int channels, int levels, ReadOnlySpan<byte> parameters)
    {
        var table = new float[channels * levels];
        for (var c = 0; c < channels; c++)
        {
            if (quantizer == QuantizerKind.Uniform)
            {
                var scale = LittleEndian.ReadSingle(parameters.Slice(c * 8));
                var offset = LittleEndian.ReadSingle(parameters.Slice((c * 8) + 4));
                for (var q = 0; q < levels; q++)
                {
                    table[(c * levels) + q] = offset + (q * scale);
                }
            }
            else
            {
                for (var q = 0; q < levels; q++)
                {
                    table[(c * levels) + q] = LittleEndian.ReadSingle(parameters.Slice(((c * levels) + q) * 4));
                }
            }
        }

        foreach (var value in table)
        {
            if (float.IsNaN(value) || float.IsInfinity(value))
            {
                throw new QuantBlobException("A quantization level is not a finite number; the blob is corrupt.");
            }
        }

        return table;
    }

    /// <summary>
    /// Symbols to values for a blob's tensor, in memory proportional to the output. The level table is used when
    /// it is no larger than the output; a blob with millions of channels of one element each (whose table would
    /// be hundreds of times the output) is decoded by computing each value from its channel's parameters,
    /// which gives the same floats: uniform levels are the same float32 expression, codebook levels the same
    /// stored numbers.
    /// </summary>
    public static void Decode(ReadOnlySpan<byte> symbols, QuantizerKind quantizer, ReadOnlySpan<byte> parameters, int levels, int channels, long inner, int elementType, Span<byte> output)
    {
        if ((long)channels * levels <= symbols.Length + 65536L)
        {
            Expand(symbols, LevelTable(quantizer, channels, levels, parameters), levels, channels, inner, elementType, output);
            return;
        }

        for (var c = 0; c < channels; c++)
        {
            CheckChannel(quantizer, c, levels, parameters);
        }

        var size = TensorEntry.ElementSize(elementType);
        var i = 0;
        while (i < symbols.Length)
        {
            for (var c = 0; c < channels && i < symbols.Length; c++)
            {
                var end = (int)Math.Min(symbols.Length, i + inner);
                if (quantizer == QuantizerKind.Uniform)
                {
                    var scale = LittleEndian.ReadSingle(parameters.Slice(c * 8));
                    var offset = LittleEndian.ReadSingle(parameters.Slice((c * 8) + 4));
                    for (; i < end; i++)
                    {
                        Store(offset + (symbols[i] * scale), elementType, output.Slice(i * size));
                    }
                }
                else
                {
                    var levelBase = (long)c * levels;
                    for (; i < end; i++)
                    {
                        Store(LittleEndian.ReadSingle(parameters.Slice((int)((levelBase + symbols[i]) * 4))), elementType, output.Slice(i * size));
                    }
                }
            }
        }
    }

    // Every level of the channel is finite: for uniform levels the two ends suffice, as the levels lie between them.
    private static void CheckChannel(QuantizerKind quantizer, int channel, int levels, ReadOnlySpan<byte> parameters)
    {
        if (quantizer == QuantizerKind.Uniform)
        {
            var scale = LittleEndian.ReadSingle(parameters.Slice(channel * 8));
            var offset = LittleEndian.ReadSingle(parameters.Slice((channel * 8) + 4));
            if (IsFinite(scale) && IsFinite(offset) && IsFinite(offset + ((levels - 1) * scale)))
            {
                return;
            }
        }
        else
        {
            var ok = true;
            for (var q = 0; q < levels && ok; q++)
            {
                ok = IsFinite(LittleEndian.ReadSingle(parameters.Slice((int)((((long)channel * levels) + q) * 4))));
            }

            if (ok)
            {
                return;
            }
        }

        throw new QuantBlobException("A quantization level is not a finite number; the blob is corrupt.");
    }

    private static bool IsFinite(float value) => !float.IsNaN(value) && !float.IsInfinity(value);

    /// <summary>
    /// Writes the value of each symbol into <paramref name="output"/>, encoded as <paramref name="elementType"/>
    /// (little-endian, as ONNX raw_data). Elements are in C order; <paramref name="inner"/> is the product of the
    /// dimensions after the channel axis.
    /// </summary>
    public static void Expand(ReadOnlySpan<byte> symbols, float[] table, int levels, int channels, long inner, int elementType, Span<byte> output)
    {
        var size = TensorEntry.ElementSize(elementType);
        var i = 0;
        if (elementType == 1 && BitConverter.IsLittleEndian)
        {
            // The common case, float32 on a little-endian machine: write the floats directly.
            var floats = MemoryMarshal.Cast<byte, float>(output);
            while (i < symbols.Length)
            {
                for (var c = 0; c < channels && i < symbols.Length; c++)
                {
                    var levelBase = c * levels;
                    var end = (int)Math.Min(symbols.Length, i + inner);
                    for (; i < end; i++)
                    {
                        floats[i] = table[levelBase + symbols[i]];
                    }
                }
            }

            return;
        }

        while (i < symbols.Length)
        {
            for (var c = 0; c < channels && i < symbols.Length; c++)
            {
                var levelBase = c * levels;
                var end = (int)Math.Min(symbols.Length, i + inner);
                for (; i < end; i++)
                {
                    Store(table[levelBase + symbols[i]], elementType, output.Slice(i * size));
                }
            }
        }
    }

    /// <summary>Float32 values, little-endian, re-encoded as <paramref name="elementType"/>.</summary>
    public static void Convert(ReadOnlySpan<byte> float32Values, int elementType, Span<byte> output)
    {
        var size = TensorEntry.ElementSize(elementType);
        for (var i = 0; i < float32Values.Length / 4; i++)
        {
            Store(LittleEndian.ReadSingle(float32Values.Slice(i * 4)), elementType, output.Slice(i * size));
        }
    }

    private static void Store(float value, int elementType, Span<byte> target)
    {
        switch (elementType)
        {
            case 1:
                LittleEndian.WriteSingle(target, value);
                break;
            case 11:
                LittleEndian.WriteDouble(target, value);
                break;
            case 10:
                BinaryPrimitives.WriteUInt16LittleEndian(target, HalfBits(value));
                break;
            default:
                BinaryPrimitives.WriteUInt16LittleEndian(target, Bfloat16Bits(value));
                break;
        }
    }

    /// <summary>IEEE 754 binary16, rounded to nearest even (what System.Half does; netstandard2.0 lacks it).</summary>
    internal static ushort HalfBits(float value)
    {
        var bits = LittleEndian.SingleBits(value);
        var sign = (bits >> 16) & 0x8000;
        var exponent = (int)((bits >> 23) & 0xFF);
        var mantissa = bits & 0x7FFFFF;
        if (exponent == 0xFF)
        {
            return (ushort)(sign | 0x7C00 | (mantissa != 0 ? 0x200 | (mantissa >> 13) : 0));
        }

        var halfExponent = exponent - 127 + 15;
        if (halfExponent >= 0x1F)
        {
            return (ushort)(sign | 0x7C00);
        }

        if (halfExponent <= 0)
        {
            if (halfExponent < -10)
            {
                return (ushort)sign;
            }

            mantissa |= 0x800000;
            var shift = 14 - halfExponent;
            var halfMantissa = mantissa >> shift;
            var remainder = mantissa & ((1u << shift) - 1);
            var halfway = 1u << (shift - 1);
            if (remainder > halfway || (remainder == halfway && (halfMantissa & 1) != 0))
            {
                halfMantissa++;
            }

            return (ushort)(sign | halfMantissa);
        }

        var result = (uint)(halfExponent << 10) | (mantissa >> 13);
        var rest = mantissa & 0x1FFF;
        if (rest > 0x1000 || (rest == 0x1000 && (result & 1) != 0))
        {
            result++;
        }

        return (ushort)(sign | result);
    }

    /// <summary>bfloat16, rounded to nearest even.</summary>
    internal static ushort Bfloat16Bits(float value)
    {
        var bits = LittleEndian.SingleBits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x40);
        }

        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
}
