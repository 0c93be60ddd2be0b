using QuantTasks.Quantization;

namespace QuantTasks.Core.Tests.Quantization;

/// <summary>
/// Uniform grids with an importance per weight: each channel's range is the clip factor that a brute-force
/// evaluation of every factor finds best, the min-max grid is what comes out without importance, and an outlier
/// whose input never fires no longer stretches the grid.
/// </summary>
public sealed class UniformQuantizerTests
{
    [Theory]
    [InlineData(2, false, false)]
    [InlineData(3, true, false)]
    [InlineData(4, false, true)]
    public void Each_channel_gets_the_clip_factor_brute_force_finds_best(int bits, bool symmetric, bool zeroExact)
    {
        var random = new Random(bits);
        const int Channels = 6, Inner = 40;
        var values = new float[Channels * Inner];
        var importance = new float[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            // Heavy tails: a few large weights among small ones.
            values[i] = (float)((random.NextDouble() - 0.5) * (random.Next(10) == 0 ? 8 : 1));
            importance[i] = (float)random.NextDouble();
        }

        var fitted = UniformQuantizer.Quantize("w", values, [Channels, Inner], bits, 0, symmetric, zeroExact, importance);
        var minMax = UniformQuantizer.Quantize("w", values, [Channels, Inner], bits, 0, symmetric, zeroExact);
        var fittedValues = fitted.Dequantize();
        var minMaxValues = minMax.Dequantize();

        for (var c = 0; c < Channels; c++)
        {
            var channel = values.AsSpan(c * Inner, Inner).ToArray();
            double Error(float[] reconstructed) =>
                Enumerable.Range(c * Inner, Inner).Sum(i => importance[i] * Math.Pow(values[i] - reconstructed[i], 2));

            // Every factor evaluated independently: the min-max grid of the channel's extremes scaled by it.
            var best = UniformQuantizer.ClipFactors.Min(factor =>
            {
                var clipped = UniformQuantizer.Quantize("w", [factor * channel.Min(), factor * channel.Max()], [1, 2], bits, 0, symmetric, zeroExact);
                var (scale, offset) = (clipped.Parameters[0], clipped.Parameters[1]);
                var maxSymbol = symmetric && bits > 1 ? (1 << bits) - 2 : (1 << bits) - 1;
                return Enumerable.Range(0, Inner).Sum(k =>
                {
                    var q = scale == 0 ? 0 : Math.Clamp((int)MathF.Round((channel[k] - offset) / scale, MidpointRounding.ToEven), 0, maxSymbol);
                    return importance[(c * Inner) + k] * Math.Pow(channel[k] - (offset + (q * scale)), 2);
                });
            });

            Assert.Equal(best, Error(fittedValues), best * 1e-9);
            Assert.True(Error(fittedValues) <= Error(minMaxValues) * (1 + 1e-12));
        }
    }

    [Fact]
    public void An_outlier_on_an_input_that_never_fires_does_not_stretch_the_grid()
    {
        var values = Enumerable.Range(0, 64).Select(i => (float)Math.Sin(i) * 0.5f).ToArray();
        values[7] = 30f;
        var importance = Enumerable.Repeat(1f, 64).ToArray();
        importance[7] = 0;

        var fitted = UniformQuantizer.Quantize("w", values, [1, 64], 4, 0, symmetric: false, importance: importance);
        var minMax = UniformQuantizer.Quantize("w", values, [1, 64], 4, 0, symmetric: false);

        Assert.True(fitted.Parameters[0] < minMax.Parameters[0] * 0.5f, $"scale {fitted.Parameters[0]} vs min-max {minMax.Parameters[0]}");
        Assert.Equal(minMax.Parameters, UniformQuantizer.Quantize("w", values, [1, 64], 4, 0, symmetric: false, importance: null).Parameters);
    }
}
