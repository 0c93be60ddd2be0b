using QuantTasks.Quantization;
using QuantTasks.Runtime.Quantization;

namespace QuantTasks.Compensation;

/// <summary>
/// Turns a quantizer's result into its compensated form: the levels (uniform scale and offset, k-means or ECSQ
/// codebooks) stay as the quantizer chose them, and every weight's symbol is chosen again, one input column at a
/// time, with the rounding errors spread over the columns not yet rounded (<see cref="OptimalBrainCompensation"/>).
/// Pruned weights are rounded to the exact zero level, so pruning is compensated as well. The result has the same
/// levels and shape, so the coder sizes it as any other quantized tensor. Column-by-column rounding is greedy: on a
/// coarse grid of fixed levels it can end above plain rounding, so the layer's output error of both is measured
/// and the smaller one is kept; compensation never makes a layer worse. A layer whose Hessian stays singular
/// (<c>gptq.dampening: 0</c> with collinear inputs) keeps plain rounding too.
/// </summary>
internal static class Compensator
{
    /// <summary>The compensated tensor.</summary>
    /// <param name="quantized">The quantizer's result (its levels are kept).</param>
    /// <param name="original">The float weights before pruning.</param>
    /// <param name="mask">Pruned weights (true), or null.</param>
    /// <param name="hessian">The layer's Hessian.</param>
    /// <param name="options">Dampening, order, blocks.</param>
    public static QuantizedTensor Apply(QuantizedTensor quantized, float[] original, bool[]? mask, LayerHessian hessian, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(quantized);
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(hessian);
        var levels = 1 << quantized.Bits;
        var table = Dequantizer.LevelTable(quantized.Kind, quantized.Channels, levels, quantized.ParameterBytes());
        var channels = Enumerable.Range(0, quantized.Channels).Select(c => new ChannelGrid(table, c * levels, levels)).ToArray();
        var perGroup = hessian.Rows / hessian.Groups;
        var columns = hessian.Columns;
        var symbols = new byte[original.Length];
        double compensatedError = 0, plainError = 0;
        var plainValues = quantized.Dequantize();
        int Index(int row, int column) => hessian.Transposed ? (column * hessian.Rows) + row : (row * columns) + column;

        for (var g = 0; g < hessian.Groups; g++)
        {
            var firstRow = g * perGroup;
            var weights = new float[perGroup * columns];
            for (var r = 0; r < perGroup; r++)
            {
                for (var j = 0; j < columns; j++)
                {
                    weights[(r * columns) + j] = original[Index(firstRow + r, j)];
                }
            }

            (float, byte) Round(int row, int column, double value)
            {
                var grid = channels[quantized.ChannelAxis < 0 ? 0 : firstRow + row];
                return mask is not null && mask[Index(firstRow + row, column)] ? grid.Zero() : grid.Nearest(value);
            }

            OptimalBrainCompensation.Result result;
            try
            {
                result = OptimalBrainCompensation.Run(weights, perGroup, columns, hessian.PerGroup[g], Round, options);
            }
            catch (NotPositiveDefiniteException)
            {
                // A singular Hessian (no dampening, collinear inputs) gives nothing to compensate with: the layer
                // keeps plain rounding, as when compensation would make it worse.
                return quantized;
            }

            var plain = new float[weights.Length];
            for (var r = 0; r < perGroup; r++)
            {
                for (var j = 0; j < columns; j++)
                {
                    symbols[Index(firstRow + r, j)] = result.Symbols[(r * columns) + j];
                    plain[(r * columns) + j] = plainValues[Index(firstRow + r, j)];
                }
            }

            compensatedError += OptimalBrainCompensation.OutputError(weights, result.Values, perGroup, columns, hessian.PerGroup[g]);
            plainError += OptimalBrainCompensation.OutputError(weights, plain, perGroup, columns, hessian.PerGroup[g]);
        }

        if (compensatedError > plainError)
        {
            return quantized;
        }

        return new QuantizedTensor(quantized.Name, [.. quantized.Dims], quantized.Bits, quantized.Kind, quantized.ChannelAxis,
            quantized.Parameters, symbols, quantized.Method);
    }

    /// <summary>One channel's levels, sorted, for nearest-level lookups by binary search.</summary>
    private sealed class ChannelGrid
    {
        private readonly float[] _values;
        private readonly byte[] _symbols;

        public ChannelGrid(float[] table, int start, int levels)
        {
            var order = Enumerable.Range(0, levels).OrderBy(q => table[start + q]).ThenBy(q => q).ToArray();
            _values = order.Select(q => table[start + q]).ToArray();
            _symbols = order.Select(q => (byte)q).ToArray();
        }

        public (float Value, byte Symbol) Nearest(double value)
        {
            var index = Array.BinarySearch(_values, (float)value);
            if (index >= 0)
            {
                return (_values[index], _symbols[index]);
            }

            var above = ~index;
            if (above == 0)
            {
                return (_values[0], _symbols[0]);
            }

            if (above == _values.Length)
            {
                return (_values[^1], _symbols[^1]);
            }

            // Ties go to the lower level, as the quantizers' own rounding does.
            return value - _values[above - 1] <= _values[above] - value
                ? (_values[above - 1], _symbols[above - 1])
                : (_values[above], _symbols[above]);
        }

        // The exact zero level that pruned weights keep (quantizers add one whenever a tensor is pruned).
        public (float Value, byte Symbol) Zero()
        {
            var index = Array.IndexOf(_values, 0f);
            return index >= 0 ? (0f, _symbols[index]) : Nearest(0);
        }
    }
}
