using QuantTasks.Runtime.Format;

namespace QuantTasks.Quantization;

/// <summary>
/// Uniform quantization at a fixed bit width: each channel's (or the whole tensor's) range is cut into 2^bits
/// evenly spaced levels, value = offset + symbol * scale. Asymmetric uses the channel's own [min, max];
/// symmetric centres the levels on zero over [-max|w|, +max|w|], so zero is a level whenever the count of
/// levels is odd (2^bits - 1 of them are used then).
/// </summary>
internal static class UniformQuantizer
{
    /// <summary>Quantizes <paramref name="values"/> (C order, shape <paramref name="dims"/>).</summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="values">The weights.</param>
    /// <param name="dims">Their shape.</param>
    /// <param name="bits">1 to 8.</param>
    /// <param name="channelAxis">The output-channel axis for per-channel levels, or -1 for per tensor.</param>
    /// <param name="symmetric">Centre the levels on zero.</param>
    /// <param name="zeroExact">
    /// Asymmetric only: shift each channel's grid so that zero is a level (offset = -z * scale for an integer z),
    /// which keeps pruned weights exactly zero.
    /// </param>
    public static QuantizedTensor Quantize(string name, ReadOnlySpan<float> values, IReadOnlyList<long> dims, int bits, int channelAxis, bool symmetric, bool zeroExact = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, 8);
        var shape = dims.ToArray();
        var channels = channelAxis < 0 ? 1 : (int)shape[channelAxis];
        var inner = channelAxis < 0 ? values.Length : shape.Skip(channelAxis + 1).Aggregate(1L, (a, b) => a * b);
        var levels = 1 << bits;

        var min = new float[channels];
        var max = new float[channels];
        Array.Fill(min, float.PositiveInfinity);
        Array.Fill(max, float.NegativeInfinity);
        foreach (var (start, end, c) in ChannelLayout.Runs(values.Length, channels, inner))
        {
            for (var i = start; i < end; i++)
            {
                min[c] = Math.Min(min[c], values[i]);
                max[c] = Math.Max(max[c], values[i]);
            }
        }

        var parameters = new float[channels * 2];
        for (var c = 0; c < channels; c++)
        {
            float scale, offset;
            if (symmetric)
            {
                var bound = Math.Max(Math.Abs(min[c]), Math.Abs(max[c]));
                // An odd number of levels puts one exactly on zero; with one bit there are only two.
                var steps = bits == 1 ? 1 : levels - 2;
                scale = bound == 0 ? 0 : 2 * bound / steps;
                offset = -bound;
            }
            else
            {
                scale = max[c] > min[c] ? (max[c] - min[c]) / (levels - 1) : 0;
                offset = min[c];
                if (zeroExact && scale > 0 && min[c] <= 0 && max[c] >= 0)
                {
                    // The runtime computes offset + q * scale in float32; with offset = -(z * scale) the level at
                    // q = z is exactly zero.
                    var z = MathF.Round(-min[c] / scale, MidpointRounding.ToEven);
                    offset = -(z * scale);
                }
            }

            parameters[2 * c] = scale;
            parameters[(2 * c) + 1] = offset;
        }

        var symbols = new byte[values.Length];
        var maxSymbol = symmetric && bits > 1 ? levels - 2 : levels - 1;
        foreach (var (start, end, c) in ChannelLayout.Runs(values.Length, channels, inner))
        {
            var scale = parameters[2 * c];
            var offset = parameters[(2 * c) + 1];
            for (var i = start; i < end; i++)
            {
                var q = scale == 0 ? 0 : (int)MathF.Round((values[i] - offset) / scale, MidpointRounding.ToEven);
                symbols[i] = (byte)Math.Clamp(q, 0, maxSymbol);
            }
        }

        return new QuantizedTensor(name, shape, bits, QuantizerKind.Uniform, channelAxis, parameters, symbols,
            symmetric ? "uniform-symmetric" : "uniform");
    }
}
