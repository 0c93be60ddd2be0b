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
internal sealed record LayerFactor(int Columns, int[] Order, bool[] Dead, double[] Upper);

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
    /// <summary>The result: the rounded values and their symbols, row-major like the input.</summary>
    internal sealed record Result(float[] Values, byte[] Symbols);

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

    /// <summary>Factorises a layer's Hessian for <see cref="Run(float[], int, LayerFactor, RoundWeight, LayerPruning, int)"/>.</summary>
    /// <exception cref="NotPositiveDefiniteException">H stays singular after dampening.</exception>
    public static LayerFactor Factorize(double[] hessian, int columns, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        ArgumentNullException.ThrowIfNull(options);
        if (hessian.Length != (long)columns * columns)
        {
            throw new ArgumentException($"A layer of {columns} inputs needs a {columns} x {columns} Hessian.", nameof(hessian));
        }

        var h = (double[])hessian.Clone();

        // Inputs that never fire carry no information: their weights cannot change the output, so they are
        // rounded as they are with nothing to compensate (a unit diagonal keeps H invertible).
        var dead = new bool[columns];
        for (var j = 0; j < columns; j++)
        {
            if (h[(j * columns) + j] == 0)
            {
                dead[j] = true;
                h[(j * columns) + j] = 1;
            }
        }

        Dampen(h, columns, options.Dampening);
        var order = ColumnOrder(h, columns, options.Order);
        return new LayerFactor(columns, order, dead, UpperCholeskyOfInverse(Permute(h, columns, order), columns));
    }

    /// <summary>Rounds (and prunes) one layer with a factorisation made by <see cref="Factorize"/>.</summary>
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

                    // Within the block, immediately: the next columns of this block see this rounding.
                    if (e != 0)
                    {
                        Vectors.SubtractScaled(row[(p + 1)..end], u.AsSpan((p * n) + p + 1, end - p - 1), e);
                    }
                }
            });

            // The columns after the block receive the block's errors at once: W[:, end:] -= E U[block, end:]. Rows
            // go in tiles so that each row of U is read once per tile rather than once per row (the update is
            // bound by memory, not arithmetic); every element still sees the block's columns in order.
            if (end < n)
            {
                const int Tile = 8;
                Parallel.For(0, (rows + Tile - 1) / Tile, parallel, tile =>
                {
                    var last = Math.Min(rows, (tile + 1) * Tile);
                    for (var p = start; p < end; p++)
                    {
                        var uRow = u.AsSpan((p * n) + end, n - end);
                        for (var r = tile * Tile; r < last; r++)
                        {
                            var e = errors[(r * width) + p - start];
                            if (e != 0)
                            {
                                Vectors.SubtractScaled(w.AsSpan((r * n) + end, n - end), uRow, e);
                            }
                        }
                    }
                });
            }
        }

        return new Result(values, symbols);
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
        var perRow = new double[rows];
        var delta = new double[rows * columns];
        for (var i = 0; i < delta.Length; i++)
        {
            delta[i] = weights[i] - rounded[i];
        }

        // Rows are independent; their sum is taken in row order, so the result does not depend on the threads.
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = rows * (long)columns * columns < 1 << 20 ? 1 : -1 },
            r => perRow[r] = QuadraticForm(delta.AsSpan(r * columns, columns), hessian, columns));
        double total = 0;
        foreach (var value in perRow)
        {
            total += value;
        }

        return total;
    }

    /// <summary>d^T H d for a symmetric n x n H, skipping the zeros of d (most of them after exact rounding).</summary>
    internal static double QuadraticForm(ReadOnlySpan<double> delta, double[] hessian, int n)
    {
        double total = 0;
        for (var a = 0; a < n; a++)
        {
            if (delta[a] != 0)
            {
                total += delta[a] * Vectors.Dot(hessian.AsSpan(a * n, n), delta);
            }
        }

        return total;
    }

    // H + lambda * mean(diag H) * I: keeps the inverse well conditioned when inputs are nearly collinear.
    private static void Dampen(double[] h, int n, double fraction)
    {
        double mean = 0;
        for (var j = 0; j < n; j++)
        {
            mean += h[(j * n) + j];
        }

        mean /= Math.Max(1, n);
        for (var j = 0; j < n; j++)
        {
            h[(j * n) + j] += fraction * mean;
        }
    }

    private static int[] ColumnOrder(double[] h, int n, ColumnOrder order)
    {
        var columns = Enumerable.Range(0, n).ToArray();
        return order == Compensation.ColumnOrder.DescendingHessianDiagonal
            ? columns.OrderByDescending(j => h[(j * n) + j]).ThenBy(j => j).ToArray()
            : columns;
    }

    private static double[] Permute(double[] h, int n, int[] order)
    {
        var p = new double[n * n];
        for (var a = 0; a < n; a++)
        {
            for (var b = 0; b < n; b++)
            {
                p[(a * n) + b] = h[(order[a] * n) + order[b]];
            }
        }

        return p;
    }

    /// <summary>
    /// U with U^T U = H^-1, upper triangular, without forming H^-1: H = U^-1 U^-T, so V = U^-1 is the upper factor
    /// of H = V V^T, which is the lower Cholesky factor L of the reversed matrix J H J read backwards (V = J L J).
    /// Hence U = J L^-1 J: one Cholesky and one triangular inverse, half the work of inverting H and factorising
    /// the inverse.
    /// </summary>
    internal static double[] UpperCholeskyOfInverse(double[] h, int n)
    {
        var reversed = new double[n * n];
        for (var a = 0; a < n; a++)
        {
            for (var b = 0; b < n; b++)
            {
                reversed[(a * n) + b] = h[((n - 1 - a) * n) + (n - 1 - b)];
            }
        }

        var l = Cholesky(reversed, n);

        // Column j of L^-1 solves L m = e_j by forward substitution; the columns are independent.
        var u = new double[n * n];
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = n < 128 ? 1 : -1 }, j =>
        {
            var m = new double[n];
            m[j] = 1 / l[(j * n) + j];
            for (var i = j + 1; i < n; i++)
            {
                m[i] = -Vectors.Dot(l.AsSpan((i * n) + j, i - j), m.AsSpan(j, i - j)) / l[(i * n) + i];
            }

            for (var i = j; i < n; i++)
            {
                u[((n - 1 - i) * n) + (n - 1 - j)] = m[i];
            }
        });

        return u;
    }

    /// <summary>
    /// Lower Cholesky factor, column by column (left-looking): once L[j, j] is known, the entries below it depend
    /// only on earlier columns, so they are computed in parallel as dot products of contiguous row prefixes.
    /// </summary>
    private static double[] Cholesky(double[] a, int n)
    {
        var l = new double[n * n];
        for (var j = 0; j < n; j++)
        {
            var rowJ = l.AsSpan(j * n, j);
            var diagonal = a[(j * n) + j] - Vectors.Dot(rowJ, rowJ);
            if (!(diagonal > 0))
            {
                throw new NotPositiveDefiniteException();
            }

            var pivot = Math.Sqrt(diagonal);
            l[(j * n) + j] = pivot;
            var below = n - j - 1;
            var column = j;
            Parallel.For(0, below, new ParallelOptions { MaxDegreeOfParallelism = (long)below * column < 16384 ? 1 : -1 }, k =>
            {
                var i = column + 1 + k;
                l[(i * n) + column] = (a[(i * n) + column] - Vectors.Dot(l.AsSpan(i * n, column), l.AsSpan(column * n, column))) / pivot;
            });
        }

        return l;
    }
}

/// <summary>The two vector kernels of compensation, on <see cref="Vector{T}"/>.</summary>
internal static class Vectors
{
    /// <summary>
    /// sum x_i y_i, in four interleaved partial sums added as (s0 + s1) + (s2 + s3) whatever the hardware, so that
    /// every machine gets the same bits (the rounding decisions, and so the blob, depend on them).
    /// </summary>
    public static double Dot(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        y = y[..x.Length];
        var i = 0;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector256.IsHardwareAccelerated && x.Length >= 8)
        {
            var acc = Vector256<double>.Zero;
            var vx = MemoryMarshal.Cast<double, Vector256<double>>(x);
            var vy = MemoryMarshal.Cast<double, Vector256<double>>(y);
            for (var v = 0; v < vx.Length; v++)
            {
                acc += vx[v] * vy[v];
            }

            (s0, s1, s2, s3) = (acc[0], acc[1], acc[2], acc[3]);
            i = vx.Length * 4;
        }
        else
        {
            for (; i + 4 <= x.Length; i += 4)
            {
                s0 += x[i] * y[i];
                s1 += x[i + 1] * y[i + 1];
                s2 += x[i + 2] * y[i + 2];
                s3 += x[i + 3] * y[i + 3];
            }
        }

        var sum = (s0 + s1) + (s2 + s3);
        for (; i < x.Length; i++)
        {
            sum += x[i] * y[i];
        }

        return sum;
    }

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
internal sealed record CompensationOptions(double Dampening = 0.01, ColumnOrder Order = ColumnOrder.Natural, int BlockSize = 128,
    MaskSelection Mask = MaskSelection.Saliency);
