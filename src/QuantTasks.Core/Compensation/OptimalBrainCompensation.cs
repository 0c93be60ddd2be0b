namespace QuantTasks.Compensation;

/// <summary>
/// How one weight may be rounded: the grid of the weight's output channel (row). Given the value the weight has
/// after the compensation so far, it returns the value it is rounded to and that value's symbol.
/// </summary>
/// <param name="row">The output channel.</param>
/// <param name="column">The input feature (a weight that pruning fixed at zero is told so by the grid).</param>
/// <param name="value">The weight's current (compensated) value.</param>
internal delegate (float Value, byte Symbol) RoundWeight(int row, int column, double value);

/// <summary>
/// Second-order compensated rounding of one layer (Optimal Brain Quantization in GPTQ's form; Frantar et al.,
/// ICLR 2023). The layer's reconstruction loss ||W X - Q X||^2 has Hessian H = X X^T over the layer's inputs.
/// Weights are rounded one input column at a time; each rounding error e_j is spread over the columns not yet
/// rounded by the inverse Hessian, w_k -= e_j [H^-1]_jk / [H^-1]_jj, which is what minimises the loss increase
/// given the columns already fixed. With U the upper Cholesky factor of H^-1 the update row of column j is
/// U_j,k / U_j,j over the remaining columns (the inverse restricted to them, at no extra cost), and updates are
/// applied lazily in blocks of columns so that the outer update is one matrix product per block.
/// </summary>
internal static class OptimalBrainCompensation
{
    /// <summary>The result: the rounded values and their symbols, row-major like the input.</summary>
    internal sealed record Result(float[] Values, byte[] Symbols);

    /// <summary>Rounds <paramref name="weights"/> (rows x columns, row-major) with compensation.</summary>
    /// <param name="weights">The float weights; not modified.</param>
    /// <param name="rows">Output channels.</param>
    /// <param name="columns">Input features (for a convolution: input channels x kernel positions of one group).</param>
    /// <param name="hessian">X X^T, columns x columns, row-major (only its values are read; a copy is dampened).</param>
    /// <param name="round">The grid.</param>
    /// <param name="options">Dampening, column order, block size.</param>
    public static Result Run(float[] weights, int rows, int columns, double[] hessian, RoundWeight round, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(hessian);
        ArgumentNullException.ThrowIfNull(round);
        ArgumentNullException.ThrowIfNull(options);
        if (weights.Length != (long)rows * columns || hessian.Length != (long)columns * columns)
        {
            throw new ArgumentException($"A {rows} x {columns} layer needs {rows * columns} weights and a {columns} x {columns} Hessian.");
        }

        var h = (double[])hessian.Clone();
        var w = new double[weights.Length];
        for (var i = 0; i < w.Length; i++)
        {
            w[i] = weights[i];
        }

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
        var permuted = Permute(h, columns, order);
        var u = UpperCholeskyOfInverse(permuted, columns);

        var values = new float[weights.Length];
        var symbols = new byte[weights.Length];
        var block = Math.Max(1, options.BlockSize);
        var errors = new double[rows * block];
        for (var start = 0; start < columns; start += block)
        {
            var end = Math.Min(columns, start + block);
            for (var p = start; p < end; p++)
            {
                var column = order[p];
                var d = u[(p * columns) + p];
                for (var r = 0; r < rows; r++)
                {
                    var current = w[(r * columns) + column];
                    var (value, symbol) = round(r, column, current);
                    values[(r * columns) + column] = value;
                    symbols[(r * columns) + column] = symbol;
                    var e = dead[column] ? 0 : (current - value) / d;
                    errors[(r * block) + (p - start)] = e;

                    // Within the block, immediately: the next columns of this block see this rounding.
                    for (var q = p + 1; q < end; q++)
                    {
                        w[(r * columns) + order[q]] -= e * u[(p * columns) + q];
                    }
                }
            }

            // The columns after the block receive the block's errors at once: W[:, end:] -= E U[block, end:].
            for (var r = 0; r < rows; r++)
            {
                for (var p = start; p < end; p++)
                {
                    var e = errors[(r * block) + (p - start)];
                    if (e == 0)
                    {
                        continue;
                    }

                    var uRow = p * columns;
                    for (var q = end; q < columns; q++)
                    {
                        w[(r * columns) + order[q]] -= e * u[uRow + q];
                    }
                }
            }
        }

        return new Result(values, symbols);
    }

    /// <summary>The layer's output error tr((W - Q) H (W - Q)^T), the quantity compensation minimises.</summary>
    public static double OutputError(ReadOnlySpan<float> weights, ReadOnlySpan<float> rounded, int rows, int columns, double[] hessian)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        double total = 0;
        var delta = new double[columns];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < columns; j++)
            {
                delta[j] = weights[(r * columns) + j] - rounded[(r * columns) + j];
            }

            total += QuadraticForm(delta, hessian, columns);
        }

        return total;
    }

    /// <summary>d^T H d for a symmetric n x n H, skipping the zeros of d (most of them after exact rounding).</summary>
    internal static double QuadraticForm(ReadOnlySpan<double> delta, double[] hessian, int n)
    {
        double total = 0;
        for (var a = 0; a < n; a++)
        {
            if (delta[a] == 0)
            {
                continue;
            }

            double sum = 0;
            for (var b = 0; b < n; b++)
            {
                sum += hessian[(a * n) + b] * delta[b];
            }

            total += delta[a] * sum;
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
    /// U with U^T U = H^-1, upper triangular: the transpose of the lower Cholesky factor of H^-1, where H^-1 comes
    /// from H's own Cholesky factor. Row p of U, divided by U[p, p], holds [H_F^-1]_pq / [H_F^-1]_pp for the
    /// columns F = p.. still to round, so one factorisation serves every step.
    /// </summary>
    internal static double[] UpperCholeskyOfInverse(double[] h, int n)
    {
        var lower = Cholesky(InverseFromCholesky(Cholesky(h, n), n), n);
        var u = new double[n * n];
        for (var a = 0; a < n; a++)
        {
            for (var b = a; b < n; b++)
            {
                u[(a * n) + b] = lower[(b * n) + a];
            }
        }

        return u;
    }

    private static double[] Cholesky(double[] a, int n)
    {
        var l = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                var sum = a[(i * n) + j];
                for (var k = 0; k < j; k++)
                {
                    sum -= l[(i * n) + k] * l[(j * n) + k];
                }

                if (i == j)
                {
                    if (!(sum > 0))
                    {
                        throw new NotPositiveDefiniteException();
                    }

                    l[(i * n) + i] = Math.Sqrt(sum);
                }
                else
                {
                    l[(i * n) + j] = sum / l[(j * n) + j];
                }
            }
        }

        return l;
    }

    // (L L^T)^-1 = L^-T L^-1, from the triangular inverse of L.
    private static double[] InverseFromCholesky(double[] l, int n)
    {
        var li = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            li[(i * n) + i] = 1 / l[(i * n) + i];
            for (var j = 0; j < i; j++)
            {
                double sum = 0;
                for (var k = j; k < i; k++)
                {
                    sum -= l[(i * n) + k] * li[(k * n) + j];
                }

                li[(i * n) + j] = sum / l[(i * n) + i];
            }
        }

        var inverse = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                double sum = 0;
                for (var k = i; k < n; k++)
                {
                    sum += li[(k * n) + i] * li[(k * n) + j];
                }

                inverse[(i * n) + j] = sum;
                inverse[(j * n) + i] = sum;
            }
        }

        return inverse;
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

/// <summary>Settings of compensated rounding.</summary>
/// <param name="Dampening">Added to H's diagonal as a fraction of its mean (the papers' 1%).</param>
/// <param name="Order">Column order.</param>
/// <param name="BlockSize">Columns per lazy update block (the result does not depend on it).</param>
internal sealed record CompensationOptions(double Dampening = 0.01, ColumnOrder Order = ColumnOrder.Natural, int BlockSize = 128);
