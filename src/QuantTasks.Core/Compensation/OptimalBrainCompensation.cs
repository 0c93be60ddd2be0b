using System.Numerics;
using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;

namespace QuantTasks.Compensation;

/// <summary>
/// How one weight may be rounded: the grid of the weight's output channel (row). Given the value the weight has
/// after the compensation so far, it returns the value it is rounded to and that value's symbol.
/// </summary>
/// <param name="row">The output channel.</param>
/// <param name="column">The input feature.</param>
/// <param name="value">The weight's current (compensated) value.</param>
/// <param name="errorWeight">
/// What a unit squared rounding error of this weight adds to the layer's output error once the columns after it
/// compensate (1 / [H_F^-1]_jj): a grid that also prices code length (ECSQ) weighs its rate term against it.
/// </param>
/// <param name="pruned">Whether pruning chose this weight: the grid returns its exact zero.</param>
internal delegate (float Value, byte Symbol) RoundWeight(int row, int column, double value, double errorWeight, bool pruned);

/// <summary>
/// Which weights of a layer are pruned during compensation: none, a fixed mask, or a mask chosen as the columns are
/// reached (SparseGPT): at the start of every block of columns, the weights of smallest Optimal Brain Surgeon
/// saliency w^2 / [H_F^-1]_jj among the rows that can hold a zero are pruned, a share of the block equal to the
/// requested sparsity, so the pruned count is the same as the fixed mask's.
/// </summary>
internal sealed class LayerPruning
{
    private LayerPruning(bool[]? mask, double sparsity, Func<int, bool>? canPrune)
    {
        Mask = mask;
        Sparsity = sparsity;
        CanPrune = canPrune;
    }

    /// <summary>No pruning.</summary>
    public static LayerPruning None { get; } = new(null, 0, null);

    /// <summary>A fixed mask, rows x columns (true = pruned), as a magnitude criterion chose it before compensation.</summary>
    public bool[]? Mask { get; }

    /// <summary>For saliency selection: the share of the prunable rows' weights to prune.</summary>
    public double Sparsity { get; }

    /// <summary>For saliency selection: whether a row's grid has an exact zero (only those rows are pruned).</summary>
    public Func<int, bool>? CanPrune { get; }

    /// <summary>Whether the mask is chosen during compensation.</summary>
    public bool SelectsBySaliency => CanPrune is not null;

    /// <summary>Prunes exactly the weights of <paramref name="mask"/>.</summary>
    public static LayerPruning Fixed(bool[] mask) => new(mask ?? throw new ArgumentNullException(nameof(mask)), 0, null);

    /// <summary>Prunes a share <paramref name="sparsity"/> of the rows that <paramref name="canPrune"/> allows, by saliency.</summary>
    public static LayerPruning BySaliency(double sparsity, Func<int, bool> canPrune)
    {
        ArgumentNullException.ThrowIfNull(canPrune);
        ArgumentOutOfRangeException.ThrowIfNegative(sparsity);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sparsity, 1);
        return new(null, sparsity, canPrune);
    }
}

/// <summary>
/// One layer's factorisation, computed once and shared by every candidate grid of the search: the column order,
/// the inputs that never fire, and U, the upper Cholesky factor of the inverse of the dampened Hessian in that
/// order (U^T U = H^-1). Row p of U divided by U[p, p] holds [H_F^-1]_pq / [H_F^-1]_pp for the columns F = p..
/// still to round, so one factorisation serves every step.
/// </summary>
/// <param name="Columns">Input features.</param>
/// <param name="Order">Position p holds the column rounded p-th.</param>
/// <param name="Dead">Per column (stored order): never fires.</param>
/// <param name="Upper">U, Columns x Columns, row-major, in rounding order.</param>
/// <param name="DiagonalShift">What dampening added to every live input's diagonal entry (0 when none).</param>
internal sealed record LayerFactor(int Columns, int[] Order, bool[] Dead, double[] Upper, double DiagonalShift = 0);

/// <summary>
/// Second-order compensated rounding of one layer (Optimal Brain Quantization in GPTQ's form; Frantar et al.,
/// ICLR 2023), and compensated pruning in SparseGPT's form. The layer's reconstruction loss ||W X - Q X||^2 has
/// Hessian H = X X^T over the layer's inputs. Weights are rounded one input column at a time; each rounding error
/// e_j is spread over the columns not yet rounded by the inverse Hessian, w_k -= e_j [H^-1]_jk / [H^-1]_jj, which is
/// what minimises the loss increase given the columns already fixed. With U the upper Cholesky factor of H^-1 the
/// update row of column j is U_j,k / U_j,j over the remaining columns. Rows are independent given U, so they run
/// in parallel; within a row the updates are applied lazily in blocks of columns, so the update after a block is
/// one pass of vector operations over the columns left.
/// </summary>
internal static class OptimalBrainCompensation
{
    /// <summary>The result: the rounded values and their symbols, row-major like the input, and the layer's output error.</summary>
    /// <param name="Values">The rounded values.</param>
    /// <param name="Symbols">Their symbols.</param>
    /// <param name="OutputError">
    /// tr((W - Q) H (W - Q)^T) for the undampened H, from the rounding itself rather than a product with H: each
    /// step's error e = (w_p - q_p) / U_pp raises the dampened objective by exactly e^2 once the columns after it
    /// have compensated (Optimal Brain Surgeon), so the sum of e^2 is the dampened objective of the result, and
    /// the dampening's share, shift x ||W - Q||^2 over the live inputs, is taken off. The search needs this figure
    /// for every candidate; as a quadratic form it cost as much as the compensation's own updates.
    /// </param>
    internal sealed record Result(float[] Values, byte[] Symbols, double OutputError);

    /// <summary>Rounds <paramref name="weights"/> (rows x columns, row-major) with compensation and no pruning.</summary>
    /// <param name="weights">The float weights; not modified.</param>
    /// <param name="rows">Output channels.</param>
    /// <param name="columns">Input features (for a convolution: input channels x kernel positions of one group).</param>
    /// <param name="hessian">X X^T, columns x columns, row-major (only its values are read; a copy is dampened).</param>
    /// <param name="round">The grid.</param>
    /// <param name="options">Dampening, column order, block size.</param>
    public static Result Run(float[] weights, int rows, int columns, double[] hessian, RoundWeight round, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return Run(weights, rows, Factorize(hessian, columns, options), round, LayerPruning.None, options.BlockSize);
    }

    /// <summary>Factorises a layer's Hessian, given whole and row-major, for <see cref="Run(float[], int, LayerFactor, RoundWeight, LayerPruning, int)"/>.</summary>
    /// <exception cref="NotPositiveDefiniteException">H stays singular after dampening.</exception>
    public static LayerFactor Factorize(double[] hessian, int columns, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        if (hessian.Length != (long)columns * columns)
        {
            throw new ArgumentException($"A layer of {columns} inputs needs a {columns} x {columns} Hessian.", nameof(hessian));
        }

        return Factorize(SymmetricMatrix.FromDense(hessian, columns), options);
    }

    /// <summary>Factorises a layer's Hessian for <see cref="Run(float[], int, LayerFactor, RoundWeight, LayerPruning, int)"/>.</summary>
    /// <exception cref="NotPositiveDefiniteException">H stays singular after dampening.</exception>
    public static LayerFactor Factorize(SymmetricMatrix hessian, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        ArgumentNullException.ThrowIfNull(options);
        var columns = hessian.Size;

        // Inputs that never fire carry no information: their weights cannot change the output, so they are
        // rounded as they are with nothing to compensate (a unit diagonal keeps H invertible). Dampening and the
        // column order need only the diagonal, so the one n x n working copy is made already permuted.
        var diagonal = new double[columns];
        var dead = new bool[columns];
        for (var j = 0; j < columns; j++)
        {
            diagonal[j] = hessian[j, j];
            if (diagonal[j] == 0)
            {
                dead[j] = true;
                diagonal[j] = 1;
            }
        }

        var shift = Dampen(diagonal, options.Dampening);
        var order = ColumnOrder(diagonal, options.Order);
        return new LayerFactor(columns, order, dead, UpperCholeskyOfInverse(hessian, diagonal, order), shift);
    }

    /// <summary>Rounds (and prunes) one layer with a factorisation made by <see cref="Factorize(SymmetricMatrix, CompensationOptions)"/>.</summary>
    /// <param name="weights">rows x columns, row-major; not modified.</param>
    /// <param name="rows">Output channels.</param>
    /// <param name="factor">The layer's factorisation.</param>
    /// <param name="round">The grid.</param>
    /// <param name="pruning">Which weights are pruned.</param>
    /// <param name="blockSize">Columns per lazy update block (the result does not depend on it, except through where saliency masks are chosen).</param>
    public static Result Run(float[] weights, int rows, LayerFactor factor, RoundWeight round, LayerPruning pruning, int blockSize)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(factor);
        ArgumentNullException.ThrowIfNull(round);
        ArgumentNullException.ThrowIfNull(pruning);
        var n = factor.Columns;
        if (weights.Length != (long)rows * n || (pruning.Mask is { } fixedMask && fixedMask.Length != weights.Length))
        {
            throw new ArgumentException($"A {rows} x {n} layer needs {rows * n} weights (and as many mask entries).");
        }

        var order = factor.Order;
        var u = factor.Upper;

        // The working copy is in rounding order, so every update runs over contiguous memory.
        var w = new double[weights.Length];
        var pruned = new bool[weights.Length];
        for (var r = 0; r < rows; r++)
        {
            for (var p = 0; p < n; p++)
            {
                w[(r * n) + p] = weights[(r * n) + order[p]];
                pruned[(r * n) + p] = pruning.Mask is { } mask && mask[(r * n) + order[p]];
            }
        }

        var prunable = pruning.SelectsBySaliency ? Enumerable.Range(0, rows).Where(pruning.CanPrune!).ToArray() : [];
        long prunedSoFar = 0;
        var values = new float[weights.Length];
        var symbols = new byte[weights.Length];
        var stepErrors = new double[rows];
        var block = Math.Max(1, blockSize);
        for (var start = 0; start < n; start += block)
        {
            var end = Math.Min(n, start + block);
            if (prunable.Length > 0)
            {
                // The share of the layer's prunable weights up to this block's end, less what is pruned already.
                var target = (long)Math.Round(pruning.Sparsity * prunable.Length * end);
                prunedSoFar += SelectBySaliency(w, u, n, prunable, start, end, target - prunedSoFar, pruned);
            }

            var width = end - start;
            var errors = new double[rows * width];
            var parallel = new ParallelOptions { MaxDegreeOfParallelism = rows * (long)(n - start) < 65536 ? 1 : -1 };
            Parallel.For(0, rows, parallel, r =>
            {
                var row = w.AsSpan(r * n, n);
                for (var p = start; p < end; p++)
                {
                    var column = order[p];
                    var d = u[(p * n) + p];
                    var current = row[p];
                    var (value, symbol) = round(r, column, current, 1 / (d * d), pruned[(r * n) + p]);
                    values[(r * n) + column] = value;
                    symbols[(r * n) + column] = symbol;
                    var e = factor.Dead[column] ? 0 : (current - value) / d;
                    errors[(r * width) + p - start] = e;
                    stepErrors[r] += e * e;

                    // Within the block, immediately: the next columns of this block see this rounding.
                    if (e != 0)
                    {
                        Vectors.SubtractScaled(row[(p + 1)..end], u.AsSpan((p * n) + p + 1, end - p - 1), e);
                    }
                }
            });

            // The columns after the block receive the block's errors at once: W[:, end:] -= E U[block, end:], a
            // matrix product in cache-sized tiles (every element still sees the block's columns in order).
            if (end < n)
            {
                DenseKernels.MultiplySubtract(new MatrixView(errors, 0, width), new MatrixView(u, ((long)start * n) + end, n),
                    new MatrixView(w, end, n), rows, n - end, width, parallel: true);
            }
        }

        // The output error: the steps' sum, less the dampening's share over the live inputs (row by row in
        // order, so the figure does not depend on the threads); never below zero, which only rounding could give.
        double dampened = 0, shifted = 0;
        for (var r = 0; r < rows; r++)
        {
            dampened += stepErrors[r];
            for (var j = 0; j < n; j++)
            {
                if (!factor.Dead[j])
                {
                    var delta = (double)weights[(r * n) + j] - values[(r * n) + j];
                    shifted += delta * delta;
                }
            }
        }

        return new Result(values, symbols, Math.Max(0, dampened - (factor.DiagonalShift * shifted)));
    }

    // SparseGPT's mask selection for one block: the `count` weights of least saliency w^2 / U_pp^2 among the
    // prunable rows' weights of columns start..end (ties to the earlier row and column, for determinism).
    private static long SelectBySaliency(double[] w, double[] u, int n, int[] prunable, int start, int end, long count, bool[] pruned)
    {
        if (count <= 0)
        {
            return 0;
        }

        var candidates = new List<(double Saliency, int Index)>(prunable.Length * (end - start));
        foreach (var r in prunable)
        {
            for (var p = start; p < end; p++)
            {
                var index = (r * n) + p;
                if (!pruned[index])
                {
                    var d = u[(p * n) + p];
                    candidates.Add((w[index] * w[index] / (d * d), index));
                }
            }
        }

        candidates.Sort((a, b) => a.Saliency != b.Saliency ? a.Saliency.CompareTo(b.Saliency) : a.Index.CompareTo(b.Index));
        var chosen = (int)Math.Min(count, candidates.Count);
        for (var i = 0; i < chosen; i++)
        {
            pruned[candidates[i].Index] = true;
        }

        return chosen;
    }

    /// <summary>The layer's output error tr((W - Q) H (W - Q)^T), the quantity compensation minimises.</summary>
    public static double OutputError(ReadOnlySpan<float> weights, ReadOnlySpan<float> rounded, int rows, int columns, double[] hessian)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        var delta = new double[(long)rows * columns];
        for (var i = 0; i < delta.Length; i++)
        {
            // Subtracted in float64, where the difference of two float32 values is exact (in float32 it is
            // rounded, an error of about 1e-8 of the figure).
            delta[i] = (double)weights[i] - rounded[i];
        }

        return QuadraticForms(delta, rows, columns, hessian);
    }

    /// <summary>The layer's output error tr((W - Q) H (W - Q)^T) for H kept as its upper triangle.</summary>
    public static double OutputError(float[] weights, float[] rounded, int rows, SymmetricMatrix hessian)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(rounded);
        ArgumentNullException.ThrowIfNull(hessian);
        var n = hessian.Size;
        if (weights.Length != (long)rows * n || rounded.Length != weights.Length)
        {
            throw new ArgumentException($"A {rows} x {n} layer needs {(long)rows * n} weights, rounded as many.");
        }

        return hessian.QuadraticForms(rows, (first, count, target) =>
        {
            var offset = first * n;
            for (var i = 0; i < target.Length; i++)
            {
                target[i] = (double)weights[offset + i] - rounded[offset + i];
            }
        });
    }

    /// <summary>
    /// sum_r d_r^T H d_r over the rows of D (rows x n) for a symmetric n x n H: Y = -D H by the product kernel,
    /// then the sum of D * Y in row order, so the result does not depend on the threads.
    /// </summary>
    internal static double QuadraticForms(double[] delta, int rows, int n, double[] hessian)
    {
        var product = new double[delta.Length];
        DenseKernels.MultiplySubtract(new MatrixView(delta, 0, n), new MatrixView(hessian, 0, n), new MatrixView(product, 0, n), rows, n, n, parallel: true);
        double total = 0;
        for (var i = 0; i < delta.Length; i++)
        {
            total -= delta[i] * product[i];
        }

        return total;
    }

    // H + lambda * mean(diag H) * I: keeps the inverse well conditioned when inputs are nearly collinear. Returns
    // what was added to each entry.
    private static double Dampen(double[] diagonal, double fraction)
    {
        double mean = 0;
        foreach (var value in diagonal)
        {
            mean += value;
        }

        mean /= Math.Max(1, diagonal.Length);
        var shift = fraction * mean;
        for (var j = 0; j < diagonal.Length; j++)
        {
            diagonal[j] += shift;
        }

        return shift;
    }

    private static int[] ColumnOrder(double[] diagonal, ColumnOrder order)
    {
        var columns = Enumerable.Range(0, diagonal.Length).ToArray();
        return order == Compensation.ColumnOrder.DescendingHessianDiagonal
            ? columns.OrderByDescending(j => diagonal[j]).ThenBy(j => j).ToArray()
            : columns;
    }

    /// <summary>U with U^T U = H^-1 for an H given whole (its own diagonal, natural order).</summary>
    internal static double[] UpperCholeskyOfInverse(double[] h, int n) =>
        UpperCholeskyOfInverse(SymmetricMatrix.FromDense(h, n), Enumerable.Range(0, n).Select(j => h[((long)j * n) + j]).ToArray(), Enumerable.Range(0, n).ToArray());

    /// <summary>
    /// U with U^T U = H^-1, upper triangular, for H with <paramref name="diagonal"/> on its diagonal and its
    /// columns in <paramref name="order"/>, without forming H^-1: H = U^-1 U^-T, so V = U^-1 is the upper factor
    /// of H = V V^T, which is the lower Cholesky factor L of the reversed matrix J H J read backwards (V = J L J).
    /// Hence U = J L^-1 J: one Cholesky and one triangular inverse, half the work of inverting H and factorising
    /// the inverse. Reading J X J from a row-major X is reversing the array, so U is made in place. Beside H, the
    /// working memory is this one n x n matrix.
    /// </summary>
    internal static double[] UpperCholeskyOfInverse(SymmetricMatrix h, double[] diagonal, int[] order)
    {
        var n = h.Size;
        // The lower triangle of J P^T H P J, P the column order, with the adjusted diagonal.
        var reversed = new double[(long)n * n];
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = n < 256 ? 1 : -1 }, a =>
        {
            var row = order[n - 1 - a];
            for (var b = 0; b < a; b++)
            {
                reversed[((long)a * n) + b] = h[row, order[n - 1 - b]];
            }

            reversed[((long)a * n) + a] = diagonal[order[n - 1 - a]];
        });

        DenseKernels.CholeskyInPlace(reversed, n);
        DenseKernels.InvertLowerInPlace(reversed, n);
        Array.Reverse(reversed);
        return reversed;
    }
}

/// <summary>The within-block update of compensation, on <see cref="Vector{T}"/> (multiply, then subtract, as <see cref="DenseKernels"/> does).</summary>
internal static class Vectors
{
    /// <summary>target -= factor x source.</summary>
    public static void SubtractScaled(Span<double> target, ReadOnlySpan<double> source, double factor)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated && target.Length >= Vector<double>.Count)
        {
            var vt = MemoryMarshal.Cast<double, Vector<double>>(target);
            var vs = MemoryMarshal.Cast<double, Vector<double>>(source[..target.Length]);
            var f = new Vector<double>(factor);
            for (var v = 0; v < vt.Length; v++)
            {
                vt[v] -= f * vs[v];
            }

            i = vt.Length * Vector<double>.Count;
        }

        for (; i < target.Length; i++)
        {
            target[i] -= factor * source[i];
        }
    }
}

/// <summary>
/// The layer Hessian is singular even after dampening (collinear inputs with <c>gptq.dampening: 0</c>, or more inputs
/// than calibration vectors), so the compensation has no inverse to work with.
/// </summary>
internal sealed class NotPositiveDefiniteException : ArithmeticException
{
    public NotPositiveDefiniteException()
        : base("The layer Hessian is not positive definite after dampening.")
    {
    }
}

/// <summary>In which order the columns of a layer are rounded.</summary>
internal enum ColumnOrder
{
    /// <summary>As the weight stores them.</summary>
    Natural,

    /// <summary>The inputs with the largest Hessian diagonal first (GPTQ's "act order").</summary>
    DescendingHessianDiagonal,

    /// <summary>Both orders, each tensor keeping the one whose result has the smaller output error (plus rate term).</summary>
    Auto,
}

/// <summary>How compensated pruning chooses the weights it prunes.</summary>
internal enum MaskSelection
{
    /// <summary>Optimal Brain Surgeon's saliency w^2 / [H^-1]_jj, block by block as columns are reached (SparseGPT).</summary>
    Saliency,

    /// <summary>The magnitude mask chosen before quantization.</summary>
    Magnitude,
}

/// <summary>Settings of compensated rounding.</summary>
/// <param name="Dampening">Added to H's diagonal as a fraction of its mean (the papers' 1%).</param>
/// <param name="Order">Column order.</param>
/// <param name="BlockSize">Columns per lazy update block; saliency masks are chosen per block.</param>
/// <param name="Mask">How pruned weights are chosen.</param>
/// <param name="ClipRanges">Uniform grids: clip each channel's range to the layer's input energy before compensating.</param>
internal sealed record CompensationOptions(double Dampening = 0.01, ColumnOrder Order = ColumnOrder.Natural, int BlockSize = 128,
    MaskSelection Mask = MaskSelection.Saliency, bool ClipRanges = false);
