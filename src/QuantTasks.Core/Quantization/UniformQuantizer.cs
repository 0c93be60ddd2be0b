using QuantTasks.Runtime.Format;

namespace QuantTasks.Quantization;

/// <summary>
/// Uniform quantization at a fixed bit width: each channel's (or the whole tensor's) range is cut into 2^bits
/// evenly spaced levels, value = offset + symbol * scale. Asymmetric uses the channel's own [min, max];
/// symmetric centres the levels on zero over [-max|w|, +max|w|], so zero is a level whenever the count of
/// levels is odd (2^bits - 1 of them are used then). Given an importance per weight, each channel's range is
/// instead clipped to the factor of <see cref="ClipFactors"/> that minimises the importance-weighted squared
/// rounding error: one outlier no longer stretches the grid over weights that matter more (the factor 1 is the
/// min-max grid, so the search never ends above it).
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
    /// <param name="importance">Per weight, what a unit squared error costs (for compensation: the energy of the
    /// weight's input); null for min-max ranges.</param>
    public static QuantizedTensor Quantize(string name, ReadOnlySpan<float> values, IReadOnlyList<long> dims, int bits, int channelAxis, bool symmetric,
        bool zeroExact = false, float[]? importance = null)
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

        var maxSymbol = symmetric && bits > 1 ? levels - 2 : levels - 1;
        var parameters = new float[channels * 2];
        for (var c = 0; c < channels; c++)
        {
            (parameters[2 * c], parameters[(2 * c) + 1]) = Grid(min[c], max[c], bits, symmetric, zeroExact);
        }

        if (importance is not null)
        {
            // Squared error per channel and clip factor, accumulated over the channel's runs of elements.
            var errors = new double[channels * ClipFactors.Length];
            var grids = new (float Scale, float Offset)[channels * ClipFactors.Length];
            for (var c = 0; c < channels; c++)
            {
                for (var f = 0; f < ClipFactors.Length; f++)
                {
                    grids[(c * ClipFactors.Length) + f] = Grid(ClipFactors[f] * min[c], ClipFactors[f] * max[c], bits, symmetric, zeroExact);
                }
            }

            foreach (var (start, end, c) in ChannelLayout.Runs(values.Length, channels, inner))
            {
                for (var f = 0; f < ClipFactors.Length; f++)
                {
                    var (scale, offset) = grids[(c * ClipFactors.Length) + f];
                    double sum = 0;
                    for (var i = start; i < end; i++)
                    {
                        var error = values[i] - (offset + (Symbol(values[i], scale, offset, maxSymbol) * scale));
                        sum += importance[i] * (double)error * error;
                    }

                    errors[(c * ClipFactors.Length) + f] += sum;
                }
            }

            for (var c = 0; c < channels; c++)
            {
                // The widest range among equals: the first factor is 1.
                var best = 0;
                for (var f = 1; f < ClipFactors.Length; f++)
                {
                    if (errors[(c * ClipFactors.Length) + f] < errors[(c * ClipFactors.Length) + best])
                    {
                        best = f;
                    }
                }

                (parameters[2 * c], parameters[(2 * c) + 1]) = grids[(c * ClipFactors.Length) + best];
            }
        }

        var symbols = new byte[values.Length];
        foreach (var (start, end, c) in ChannelLayout.Runs(values.Length, channels, inner))
        {
            var scale = parameters[2 * c];
            var offset = parameters[(2 * c) + 1];
            for (var i = start; i < end; i++)
            {
                symbols[i] = Symbol(values[i], scale, offset, maxSymbol);
            }
        }

        return new QuantizedTensor(name, shape, bits, QuantizerKind.Uniform, channelAxis, parameters, symbols,
            symmetric ? SymmetricMethod : "uniform");
    }

    /// <summary>The method name a symmetric grid records.</summary>
    internal const string SymmetricMethod = "uniform-symmetric";

    /// <summary>The clipping factors tried when weights carry an importance, widest first.</summary>
    internal static readonly float[] ClipFactors = [1f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, 0.7f, 0.65f, 0.6f, 0.55f, 0.5f, 0.45f, 0.4f, 0.35f, 0.3f];

    private static byte Symbol(float value, float scale, float offset, int maxSymbol) =>
        (byte)Math.Clamp(scale == 0 ? 0 : (int)MathF.Round((value - offset) / scale, MidpointRounding.ToEven), 0, maxSymbol);

    // Scale and offset of the levels over [min, max].
    private static (float Scale, float Offset) Grid(float min, float max, int bits, bool symmetric, bool zeroExact)
    {
        var levels = 1 << bits;
        if (symmetric)
        {
            var bound = Math.Max(Math.Abs(min), Math.Abs(max));
            // An odd number of levels puts one exactly on zero; with one bit there are only two.
            var steps = bits == 1 ? 1 : levels - 2;
            return (bound == 0 ? 0 : 2 * bound / steps, -bound);
        }

        var scale = max > min ? (max - min) / (levels - 1) : 0;
        var offset = min;
        if (zeroExact && scale > 0 && min <= 0 && max >= 0)
        {
            // The runtime computes offset + q * scale in float32; with offset = -(z * scale) the level at
            // q = z is exactly zero.
            var z = MathF.Round(-min / scale, MidpointRounding.ToEven);
            offset = -(z * scale);
        }

        return (scale, offset);
    }
}
