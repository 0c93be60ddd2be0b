using QuantTasks.Quantization;
using QuantTasks.Runtime.Format;
using QuantTasks.Runtime.Quantization;

namespace QuantTasks.Compensation;

/// <summary>
/// Turns a quantizer's result into its compensated form: the levels (uniform scale and offset, k-means or ECSQ
/// codebooks) stay as the quantizer chose them, and every weight's symbol is chosen again, one input column at a
/// time, with the rounding errors spread over the columns not yet rounded (<see cref="OptimalBrainCompensation"/>).
/// A quantizer that priced code length (iterative ECSQ) has its symbols re-chosen at the same price, translated
/// into the layer's units. Pruned weights are rounded to the exact zero level; with <see cref="MaskSelection.Saliency"/>
/// the pruned weights themselves are chosen during compensation (SparseGPT), as many as the magnitude mask had.
/// The result has the same levels and shape, so the coder sizes it as any other quantized tensor. Column-by-column
/// rounding is greedy: on a coarse grid of fixed levels it can end above plain rounding, so the objective of both
/// (output error, plus the rate term where there is one) is measured and the smaller one is kept; compensation
/// never makes a layer worse. A layer whose Hessian stays singular (<c>gptq.dampening: 0</c> with collinear inputs)
/// keeps plain rounding too.
/// </summary>
internal static class Compensator
{
    /// <summary>The compensated tensor.</summary>
    /// <param name="quantized">The quantizer's result (its levels are kept).</param>
    /// <param name="original">The float weights before pruning.</param>
    /// <param name="mask">Pruned weights (true), or null.</param>
    /// <param name="hessian">The layer's Hessian.</param>
    /// <param name="options">Dampening, order, blocks, mask selection.</param>
    /// <param name="rate">The quantizer's price of code length, or null.</param>
    public static QuantizedTensor Apply(QuantizedTensor quantized, float[] original, bool[]? mask, LayerHessian hessian, CompensationOptions options,
        RatePrice? rate = null) => ApplyMeasured(quantized, original, mask, hessian, options, rate).Tensor;

    /// <summary>
    /// The compensated tensor and its layer output error tr((W - Q) H (W - Q)^T) against <paramref name="original"/>
    /// (without the rate term), which the compensation knows without a product with H.
    /// </summary>
    /// <param name="quantized">The quantizer's result (its levels are kept).</param>
    /// <param name="original">The float weights before pruning.</param>
    /// <param name="mask">Pruned weights (true), or null.</param>
    /// <param name="hessian">The layer's Hessian.</param>
    /// <param name="options">Dampening, order, blocks, mask selection.</param>
    /// <param name="rate">The quantizer's price of code length, or null.</param>
    public static (QuantizedTensor Tensor, double OutputError) ApplyMeasured(QuantizedTensor quantized, float[] original, bool[]? mask, LayerHessian hessian,
        CompensationOptions options, RatePrice? rate = null)
    {
        ArgumentNullException.ThrowIfNull(quantized);
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(hessian);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Order != ColumnOrder.Auto)
        {
            var only = Compensate(quantized, original, mask, hessian, options, rate);
            return (only.Tensor, only.OutputError);
        }

        // Neither order rounds every layer and grid better (column-by-column rounding is greedy): both are run
        // and the smaller objective is kept, so the result is never worse than either order alone; the layer's
        // two factorisations are cached side by side. Ties keep the natural order.
        var natural = Compensate(quantized, original, mask, hessian, options with { Order = ColumnOrder.Natural }, rate);
        var descending = Compensate(quantized, original, mask, hessian, options with { Order = ColumnOrder.DescendingHessianDiagonal }, rate);
        var kept = descending.Objective < natural.Objective ? descending : natural;
        return (kept.Tensor, kept.OutputError);
    }

    /// <summary>The compensated tensor in one column order, its objective (output error plus the rate term) and its output error.</summary>
    private static (QuantizedTensor Tensor, double Objective, double OutputError) Compensate(QuantizedTensor quantized, float[] original, bool[]? mask, LayerHessian hessian,
        CompensationOptions options, RatePrice? rate)
    {
        // With ClipRanges, uniform grids get ranges fitted to the layer first: the compensated result keeps those
        // levels, and the quantizer's own min-max result remains what it must beat.
        var fitted = options.ClipRanges && quantized.Kind == QuantizerKind.Uniform ? FittedUniform(quantized, original, mask, hessian) : quantized;
        var levels = 1 << fitted.Bits;
        var table = Dequantizer.LevelTable(fitted.Kind, fitted.Channels, levels, fitted.ParameterBytes());
        var lengths = rate is null ? null : CodeLengths(quantized, levels);
        var channels = Enumerable.Range(0, fitted.Channels)
            .Select(c => new ChannelGrid(table, c * levels, levels, lengths?[c]))
            .ToArray();
        var perGroup = hessian.Rows / hessian.Groups;
        var columns = hessian.Columns;
        var symbols = new byte[original.Length];
        double compensatedObjective = 0, plainObjective = 0, compensatedError = 0, plainError = 0;
        var plainValues = quantized.Dequantize();
        int Index(int row, int column) => hessian.Transposed ? (column * hessian.Rows) + row : (row * columns) + column;
        ChannelGrid GridOf(int row) => channels[fitted.ChannelAxis < 0 ? 0 : row];

        for (var g = 0; g < hessian.Groups; g++)
        {
            var firstRow = g * perGroup;
            var h = hessian.PerGroup[g];
            var weights = new float[perGroup * columns];
            var localMask = mask is null ? null : new bool[weights.Length];
            for (var r = 0; r < perGroup; r++)
            {
                for (var j = 0; j < columns; j++)
                {
                    weights[(r * columns) + j] = original[Index(firstRow + r, j)];
                    if (localMask is not null)
                    {
                        localMask[(r * columns) + j] = mask![Index(firstRow + r, j)];
                    }
                }
            }

            // ECSQ's own rule for a weight is (w - c)^2 + (lambda' / h) x length. Compensation keeps that rule on the
            // compensated value, in the layer's units: both terms scaled by what a unit squared error of the weight
            // costs there, errorWeight while compensating, H_jj for the rate of a result as a whole.
            double BitPrice(int row, int column) => rate is null
                ? 0
                : rate.ChannelRateWeight[quantized.ChannelAxis < 0 ? 0 : firstRow + row]
                    / (rate.ElementWeights is { } e ? e[Index(firstRow + row, column)] : 1f);
            double Price(int row, int column) => BitPrice(row, column) * h[column, column];

            (float, byte) Round(int row, int column, double value, double errorWeight, bool pruned)
            {
                var grid = GridOf(firstRow + row);
                return pruned ? grid.Zero() : grid.Best(value, errorWeight, errorWeight * BitPrice(row, column));
            }

            var pruning = Pruning(localMask, perGroup, columns, options, r => GridOf(firstRow + r).HasZero);
            OptimalBrainCompensation.Result result;
            try
            {
                result = OptimalBrainCompensation.Run(weights, perGroup, hessian.Factor(g, options), Round, pruning, options.BlockSize);
            }
            catch (NotPositiveDefiniteException)
            {
                // A singular Hessian (no dampening, collinear inputs) gives nothing to compensate with: the layer
                // keeps plain rounding, as when compensation would make it worse (any order fails alike).
                return (quantized, double.PositiveInfinity, OutputErrorOf(quantized, original, hessian));
            }

            var plain = new float[weights.Length];
            double compensatedRate = 0, plainRate = 0;
            for (var r = 0; r < perGroup; r++)
            {
                var grid = GridOf(firstRow + r);
                for (var j = 0; j < columns; j++)
                {
                    var index = Index(firstRow + r, j);
                    symbols[index] = result.Symbols[(r * columns) + j];
                    plain[(r * columns) + j] = plainValues[index];
                    if (rate is not null)
                    {
                        var price = Price(r, j);
                        compensatedRate += price * grid.Length(symbols[index]);
                        plainRate += price * grid.Length(quantized.Symbols[index]);
                    }
                }
            }

            // The compensated result's error comes with it; plain rounding's takes the product with H.
            var plainGroupError = OptimalBrainCompensation.OutputError(weights, plain, perGroup, h);
            compensatedError += result.OutputError;
            plainError += plainGroupError;
            compensatedObjective += result.OutputError + compensatedRate;
            plainObjective += plainGroupError + plainRate;
        }

        if (compensatedObjective > plainObjective)
        {
            return (quantized, plainObjective, plainError);
        }

        return (new QuantizedTensor(fitted.Name, [.. fitted.Dims], fitted.Bits, fitted.Kind, fitted.ChannelAxis, fitted.Parameters, symbols, fitted.Method),
            compensatedObjective, compensatedError);
    }

    private static double OutputErrorOf(QuantizedTensor quantized, float[] original, LayerHessian hessian) =>
        hessian.OutputError(original, quantized.Dequantize());

    // The uniform quantizer again, each channel's range clipped to minimise rounding error weighted by the energy
    // of each weight's input (H_jj of its column): an outlier weight on an input that barely fires no longer
    // stretches the grid over the weights that carry the output.
    private static QuantizedTensor FittedUniform(QuantizedTensor quantized, float[] original, bool[]? mask, LayerHessian hessian)
    {
        var perGroup = hessian.Rows / hessian.Groups;
        var values = (float[])original.Clone();
        var importance = new float[original.Length];
        for (var row = 0; row < hessian.Rows; row++)
        {
            var h = hessian.PerGroup[row / perGroup];
            for (var j = 0; j < hessian.Columns; j++)
            {
                var index = hessian.Transposed ? (j * hessian.Rows) + row : (row * hessian.Columns) + j;
                importance[index] = (float)h[j, j];
                if (mask is not null && mask[index])
                {
                    values[index] = 0;
                }
            }
        }

        return UniformQuantizer.Quantize(quantized.Name, values, quantized.Dims, quantized.Bits, quantized.ChannelAxis,
            symmetric: quantized.Method == UniformQuantizer.SymmetricMethod, zeroExact: mask?.Any(m => m) == true, importance);
    }

    // Magnitude keeps the quantizer's mask; saliency prunes as many weights, chosen as the columns are reached, in
    // the rows whose grid holds an exact zero.
    private static LayerPruning Pruning(bool[]? mask, int rows, int columns, CompensationOptions options, Func<int, bool> hasZero)
    {
        if (mask is null)
        {
            return LayerPruning.None;
        }

        if (options.Mask == MaskSelection.Magnitude)
        {
            return LayerPruning.Fixed(mask);
        }

        var prunable = Enumerable.Range(0, rows).Count(hasZero);
        var count = mask.Count(m => m);
        return prunable == 0 || count == 0
            ? LayerPruning.Fixed(mask)
            : LayerPruning.BySaliency(Math.Min(1, count / ((double)prunable * columns)), hasZero);
    }

    // -log2 of each symbol's frequency in its channel, as the plain result has them (the entropy coder's lengths,
    // up to Huffman's rounding); a symbol the channel never uses costs infinitely many bits.
    private static double[][] CodeLengths(QuantizedTensor quantized, int levels)
    {
        var counts = new long[quantized.Channels][];
        for (var c = 0; c < counts.Length; c++)
        {
            counts[c] = new long[levels];
        }

        foreach (var (start, end, c) in ChannelLayout.Runs(quantized.Symbols.Length, quantized.Channels, quantized.Inner))
        {
            for (var i = start; i < end; i++)
            {
                counts[c][quantized.Symbols[i]]++;
            }
        }

        return counts.Select(channel =>
        {
            var total = (double)channel.Sum();
            return channel.Select(n => n == 0 ? double.PositiveInfinity : -Math.Log2(n / total)).ToArray();
        }).ToArray();
    }

    /// <summary>One channel's levels, sorted, for nearest-level lookups by binary search.</summary>
    private sealed class ChannelGrid
    {
        private readonly float[] _values;
        private readonly byte[] _symbols;
        private readonly double[]? _lengths;
        private readonly double[]? _lengthOfSymbol;

        public ChannelGrid(float[] table, int start, int levels, double[]? lengthOfSymbol)
        {
            var order = Enumerable.Range(0, levels).OrderBy(q => table[start + q]).ThenBy(q => q).ToArray();
            _values = order.Select(q => table[start + q]).ToArray();
            _symbols = order.Select(q => (byte)q).ToArray();
            _lengthOfSymbol = lengthOfSymbol;
            _lengths = lengthOfSymbol is null ? null : order.Select(q => lengthOfSymbol[q]).ToArray();
            HasZero = Array.IndexOf(_values, 0f) >= 0;
        }

        /// <summary>Whether the grid holds an exact zero (pruning can use this channel).</summary>
        public bool HasZero { get; }

        /// <summary>The code length of a symbol, in bits (0 without a rate term).</summary>
        public double Length(byte symbol) => _lengthOfSymbol is null ? 0 : _lengthOfSymbol[symbol];

        /// <summary>
        /// The level minimising errorWeight (value - level)^2 + price x length: the nearest one when there is no
        /// price; otherwise the search walks out from the nearest level while the distortion alone stays below the
        /// best total (distortion only grows with distance).
        /// </summary>
        public (float Value, byte Symbol) Best(double value, double errorWeight, double price)
        {
            var nearest = Nearest(value);
            if (_lengths is null || price <= 0)
            {
                return (_values[nearest], _symbols[nearest]);
            }

            double Cost(int k) => (errorWeight * (value - _values[k]) * (value - _values[k])) + (price * _lengths[k]);
            var best = nearest;
            var bestCost = Cost(nearest);
            for (var k = nearest - 1; k >= 0 && errorWeight * (value - _values[k]) * (value - _values[k]) < bestCost; k--)
            {
                if (Cost(k) < bestCost)
                {
                    (best, bestCost) = (k, Cost(k));
                }
            }

            for (var k = nearest + 1; k < _values.Length && errorWeight * (value - _values[k]) * (value - _values[k]) < bestCost; k++)
            {
                if (Cost(k) < bestCost)
                {
                    (best, bestCost) = (k, Cost(k));
                }
            }

            return (_values[best], _symbols[best]);
        }

        // The exact zero level that pruned weights keep (quantizers add one whenever a tensor is pruned).
        public (float Value, byte Symbol) Zero()
        {
            var index = Array.IndexOf(_values, 0f);
            return index >= 0 ? (0f, _symbols[index]) : Best(0, 1, 0);
        }

        private int Nearest(double value)
        {
            var index = Array.BinarySearch(_values, (float)value);
            if (index >= 0)
            {
                return index;
            }

            var above = ~index;
            if (above == 0)
            {
                return 0;
            }

            if (above == _values.Length)
            {
                return _values.Length - 1;
            }

            // Ties go to the lower level, as the quantizers' own rounding does.
            return value - _values[above - 1] <= _values[above] - value ? above - 1 : above;
        }
    }
}
