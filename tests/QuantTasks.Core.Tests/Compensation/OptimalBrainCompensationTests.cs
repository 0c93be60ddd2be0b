using QuantTasks.Compensation;

namespace QuantTasks.Core.Tests.Compensation;

/// <summary>
/// Compensated rounding against an independent dense reference (Optimal Brain Surgeon's update with an explicit
/// inverse, downdated after every column: no Cholesky, no blocks), and against plain rounding.
/// </summary>
public sealed class OptimalBrainCompensationTests
{
    public static TheoryData<int, int, int, string, int> Layers => new()
    {
        { 1, 1, 1, nameof(ColumnOrder.Natural), 128 },
        { 3, 5, 11, nameof(ColumnOrder.Natural), 1 },
        { 4, 7, 12, nameof(ColumnOrder.Natural), 3 },
        { 6, 16, 13, nameof(ColumnOrder.DescendingHessianDiagonal), 4 },
        { 8, 33, 14, nameof(ColumnOrder.Natural), 128 },
        { 5, 40, 15, nameof(ColumnOrder.DescendingHessianDiagonal), 7 },
    };

    [Theory]
    [MemberData(nameof(Layers))]
    public void Equals_the_dense_reference(int rows, int columns, int seed, string order, int block)
    {
        var (weights, hessian) = RandomLayer(rows, columns, seed, deadColumn: columns > 4 ? 2 : -1);
        var options = new CompensationOptions(0.01, Enum.Parse<ColumnOrder>(order), block);

        var fast = OptimalBrainCompensation.Run(weights, rows, columns, hessian, Grid(weights, rows, columns, 3), options);
        var dense = DenseReference(weights, rows, columns, hessian, Grid(weights, rows, columns, 3), options);

        for (var i = 0; i < weights.Length; i++)
        {
            Assert.True(Math.Abs(fast.Values[i] - dense[i]) <= 1e-5, $"element {i}: {fast.Values[i]} vs {dense[i]}");
        }
    }

    [Theory]
    [InlineData(6, 16, 21, 4, 0.5)]
    [InlineData(5, 23, 22, 7, 0.3)]
    [InlineData(9, 40, 23, 128, 0.75)]
    public void Saliency_pruning_equals_the_dense_reference(int rows, int columns, int seed, int block, double sparsity)
    {
        var (weights, hessian) = RandomLayer(rows, columns, seed, deadColumn: 3, correlated: true);
        var options = new CompensationOptions(0.01, ColumnOrder.DescendingHessianDiagonal, block);
        var grid = Grid(weights, rows, columns, 3);
        bool CanPrune(int row) => row % 3 != 2;

        var fast = OptimalBrainCompensation.Run(weights, rows, OptimalBrainCompensation.Factorize(hessian, columns, options), grid,
            LayerPruning.BySaliency(sparsity, CanPrune), block);
        var dense = DenseReference(weights, rows, columns, hessian, grid, options, sparsity, CanPrune);

        for (var i = 0; i < weights.Length; i++)
        {
            Assert.True(Math.Abs(fast.Values[i] - dense[i]) <= 1e-5, $"element {i}: {fast.Values[i]} vs {dense[i]}");
        }

        // Exactly the requested share of the prunable rows is zero (a 3-bit grid rarely rounds to zero otherwise,
        // so at least that many), and the rows that cannot prune are untouched by it.
        var prunable = Enumerable.Range(0, rows).Count(CanPrune);
        var zeros = Enumerable.Range(0, weights.Length).Count(i => CanPrune(i / columns) && fast.Values[i] == 0);
        Assert.True(zeros >= Math.Round(sparsity * prunable * columns), $"{zeros} zeros");
    }

    [Theory]
    [InlineData(3, 5, 41, nameof(ColumnOrder.Natural), 1, 0.01, "none")]
    [InlineData(6, 16, 42, nameof(ColumnOrder.DescendingHessianDiagonal), 4, 0.01, "none")]
    [InlineData(8, 33, 43, nameof(ColumnOrder.Natural), 128, 0.1, "none")]
    [InlineData(5, 40, 44, nameof(ColumnOrder.DescendingHessianDiagonal), 7, 0.001, "saliency")]
    [InlineData(9, 24, 45, nameof(ColumnOrder.Natural), 5, 0.01, "magnitude")]
    [InlineData(4, 30, 46, nameof(ColumnOrder.DescendingHessianDiagonal), 128, 0, "none")]
    public void The_output_error_it_reports_is_the_quadratic_form_of_its_result(int rows, int columns, int seed, string order, int block, double dampening,
        string pruning)
    {
        // The figure comes from the rounding steps (their errors squared, less the dampening's share); the reference
        // multiplies the result's error by the undampened H. A dead input, correlated inputs and pruned weights included.
        var (weights, hessian) = RandomLayer(rows, columns, seed, deadColumn: 2, correlated: true);
        var options = new CompensationOptions(dampening, Enum.Parse<ColumnOrder>(order), block);
        var magnitude = weights.Select(x => Math.Abs(x) < 0.3f).ToArray();
        var layerPruning = pruning switch
        {
            "saliency" => LayerPruning.BySaliency(0.4, row => row != 1),
            "magnitude" => LayerPruning.Fixed(magnitude),
            _ => LayerPruning.None,
        };
        if (dampening == 0)
        {
            // Undampened, a dead input makes H singular: keep the inputs alive.
            (weights, hessian) = RandomLayer(rows, columns, seed, deadColumn: -1, correlated: true);
        }

        var result = OptimalBrainCompensation.Run(weights, rows, OptimalBrainCompensation.Factorize(hessian, columns, options), Grid(weights, rows, columns, 3),
            layerPruning, block);
        var reference = OptimalBrainCompensation.OutputError(weights, result.Values, rows, columns, hessian);

        Assert.True(reference > 0);
        Assert.True(Math.Abs(result.OutputError - reference) <= 1e-9 * reference, $"{result.OutputError} vs {reference}");
    }

    [Fact]
    public void Saliency_pruning_loses_less_output_than_compensated_magnitude_pruning()
    {
        // Greedy either way, so not on every layer; over twenty random layers it must lose clearly less in total.
        double totalMagnitude = 0, totalSaliency = 0;
        for (var seed = 0; seed < 20; seed++)
        {
            var (weights, hessian) = RandomLayer(8, 32, 300 + seed, deadColumn: -1, correlated: true);
            var factor = OptimalBrainCompensation.Factorize(hessian, 32, new CompensationOptions());
            var threshold = weights.Select(Math.Abs).Order().ElementAt(weights.Length / 2);
            var magnitude = weights.Select(x => Math.Abs(x) < threshold).ToArray();

            var byMagnitude = OptimalBrainCompensation.Run(weights, 8, factor, Identity(), LayerPruning.Fixed(magnitude), 128);
            var bySaliency = OptimalBrainCompensation.Run(weights, 8, factor, Identity(), LayerPruning.BySaliency(magnitude.Count(m => m) / 256.0, _ => true), 128);

            Assert.Equal(magnitude.Count(m => m), bySaliency.Values.Count(v => v == 0));
            totalMagnitude += OptimalBrainCompensation.OutputError(weights, byMagnitude.Values, 8, 32, hessian);
            totalSaliency += OptimalBrainCompensation.OutputError(weights, bySaliency.Values, 8, 32, hessian);
        }

        Assert.True(totalSaliency < 0.9 * totalMagnitude, $"saliency {totalSaliency} vs magnitude {totalMagnitude}");
    }

    [Fact]
    public void A_rate_priced_grid_is_told_the_compensated_error_weight()
    {
        // A grid that prices code length (symbol q costs q bits) chooses by errorWeight (v - level)^2 + price x length:
        // with the right error weight the fast result equals the dense reference, which passes 1 / [H_F^-1]_jj.
        var (weights, hessian) = RandomLayer(5, 19, 31, deadColumn: -1, correlated: true);
        var options = new CompensationOptions(0.01, ColumnOrder.Natural, 5);
        var steps = Steps(weights, 5, 19, 3);
        (float, byte) Rated(int row, int column, double value, double errorWeight, bool pruned)
        {
            var best = Enumerable.Range(0, 8)
                .MinBy(q => (errorWeight * Math.Pow(value - ((q - 3) * steps[row]), 2)) + (0.02 * q * hessian[(column * 19) + column]));
            return ((best - 3) * steps[row], (byte)best);
        }

        var fast = OptimalBrainCompensation.Run(weights, 5, 19, hessian, Rated, options);
        var dense = DenseReference(weights, 5, 19, hessian, Rated, options);

        for (var i = 0; i < weights.Length; i++)
        {
            Assert.True(Math.Abs(fast.Values[i] - dense[i]) <= 1e-5, $"element {i}: {fast.Values[i]} vs {dense[i]}");
        }
    }

    [Fact]
    public void The_factorisation_of_a_large_layer_reproduces_the_inverse()
    {
        // Large enough for the parallel paths of the Cholesky and the triangular inverse.
        var (_, hessian) = RandomLayer(1, 300, 9, deadColumn: -1, correlated: true);
        var u = OptimalBrainCompensation.UpperCholeskyOfInverse(hessian, 300);
        var inverse = Invert(hessian, 300);
        var random = new Random(1);
        for (var check = 0; check < 200; check++)
        {
            var a = random.Next(300);
            var b = random.Next(300);
            double sum = 0;
            for (var k = 0; k < 300; k++)
            {
                sum += u[(k * 300) + a] * u[(k * 300) + b];
            }

            Assert.True(Math.Abs(inverse[(a * 300) + b] - sum) <= 1e-9 * Math.Max(1, Math.Abs(inverse[(a * 300) + a])), $"({a}, {b})");
        }

        for (var a = 1; a < 300; a++)
        {
            for (var b = 0; b < a; b++)
            {
                Assert.Equal(0, u[(a * 300) + b]);
            }
        }
    }

    // Keeps every weight as it is (pruned ones at zero): compensation of pruning alone.
    private static RoundWeight Identity() => (_, _, value, _, pruned) => pruned ? (0f, (byte)0) : ((float)value, (byte)1);

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Never_has_a_larger_output_error_than_plain_rounding(int bits)
    {
        for (var seed = 0; seed < 20; seed++)
        {
            var (weights, hessian) = RandomLayer(6, 24, 100 + seed, deadColumn: -1, correlated: true);
            var grid = Grid(weights, 6, 24, bits);
            var plain = new float[weights.Length];
            for (var i = 0; i < weights.Length; i++)
            {
                plain[i] = grid(i / 24, i % 24, weights[i], 1, false).Value;
            }

            var compensated = OptimalBrainCompensation.Run(weights, 6, 24, hessian, grid, new CompensationOptions());

            var before = OptimalBrainCompensation.OutputError(weights, plain, 6, 24, hessian);
            var after = OptimalBrainCompensation.OutputError(weights, compensated.Values, 6, 24, hessian);
            Assert.True(after <= before * (1 + 1e-9), $"seed {seed}: compensated {after} > plain {before}");
        }
    }

    [Fact]
    public void A_singular_hessian_without_dampening_is_reported_as_such()
    {
        // Two identical inputs: H is singular, and with no dampening there is no inverse.
        var hessian = new double[] { 1, 1, 1, 1 };
        var weights = new float[] { 0.3f, -0.2f };

        Assert.Throws<NotPositiveDefiniteException>(() =>
            OptimalBrainCompensation.Run(weights, 1, 2, hessian, Grid(weights, 1, 2, 2), new CompensationOptions(Dampening: 0)));
    }

    [Fact]
    public void Symbols_name_the_values_the_grid_gave()
    {
        var (weights, hessian) = RandomLayer(4, 9, 5, deadColumn: -1);
        var grid = Grid(weights, 4, 9, 2);

        var result = OptimalBrainCompensation.Run(weights, 4, 9, hessian, grid, new CompensationOptions());

        var steps = Steps(weights, 4, 9, 2);
        for (var i = 0; i < weights.Length; i++)
        {
            Assert.Equal((result.Symbols[i] - 1) * steps[i / 9], result.Values[i], 6);
        }
    }

    [Fact]
    public void The_upper_factor_reproduces_the_inverse()
    {
        var (_, hessian) = RandomLayer(1, 10, 3, deadColumn: -1);
        var u = OptimalBrainCompensation.UpperCholeskyOfInverse(hessian, 10);
        var inverse = Invert(hessian, 10);

        for (var a = 0; a < 10; a++)
        {
            for (var b = 0; b < 10; b++)
            {
                double sum = 0;
                for (var k = 0; k < 10; k++)
                {
                    sum += u[(k * 10) + a] * u[(k * 10) + b];
                }

                Assert.Equal(inverse[(a * 10) + b], sum, 9);
            }
        }
    }

    /// <summary>
    /// Optimal Brain Surgeon, spelled out: before each column j, the inverse of the dampened Hessian restricted to
    /// the columns F not yet rounded, by Gauss-Jordan on that submatrix; every remaining weight moves by
    /// -e [H_F^-1]_jk / [H_F^-1]_jj. With a sparsity, at the start of each block the weights of least saliency
    /// w^2 / [H_F^-1]_jj of the block (over the rows allowed to prune) are pruned, by a full sort.
    /// </summary>
    private static float[] DenseReference(float[] weights, int rows, int columns, double[] hessian, RoundWeight round, CompensationOptions options,
        double sparsity = 0, Func<int, bool>? canPrune = null)
    {
        var h = (double[])hessian.Clone();
        var dead = new bool[columns];
        for (var j = 0; j < columns; j++)
        {
            if (h[(j * columns) + j] == 0)
            {
                dead[j] = true;
                h[(j * columns) + j] = 1;
            }
        }

        var mean = Enumerable.Range(0, columns).Average(j => h[(j * columns) + j]);
        for (var j = 0; j < columns; j++)
        {
            h[(j * columns) + j] += options.Dampening * mean;
        }

        var order = options.Order == ColumnOrder.DescendingHessianDiagonal
            ? Enumerable.Range(0, columns).OrderByDescending(j => h[(j * columns) + j]).ThenBy(j => j).ToArray()
            : Enumerable.Range(0, columns).ToArray();

        // [H_F^-1] for F = order[p..], as a dictionary from (column, column) to value.
        Func<int, int, double> InverseFrom(int p)
        {
            var f = order.Skip(p).ToArray();
            var sub = new double[f.Length * f.Length];
            for (var a = 0; a < f.Length; a++)
            {
                for (var b = 0; b < f.Length; b++)
                {
                    sub[(a * f.Length) + b] = h[(f[a] * columns) + f[b]];
                }
            }

            var inverse = Invert(sub, f.Length);
            var position = f.Select((c, i) => (c, i)).ToDictionary(x => x.c, x => x.i);
            return (a, b) => inverse[(position[a] * f.Length) + position[b]];
        }

        var w = weights.Select(x => (double)x).ToArray();
        var pruned = new bool[weights.Length];
        var result = new float[weights.Length];
        var prunable = Enumerable.Range(0, rows).Where(r => canPrune?.Invoke(r) ?? false).ToArray();
        long prunedSoFar = 0;
        for (var p = 0; p < columns; p++)
        {
            if (sparsity > 0 && p % options.BlockSize == 0)
            {
                var end = Math.Min(columns, p + options.BlockSize);
                var target = (long)Math.Round(sparsity * prunable.Length * end) - prunedSoFar;
                var diagonals = Enumerable.Range(p, end - p).ToDictionary(q => order[q], q => InverseFrom(q)(order[q], order[q]));
                var chosen = (from r in prunable
                              from q in Enumerable.Range(p, end - p)
                              let index = (r * columns) + order[q]
                              orderby w[index] * w[index] / diagonals[order[q]], (r * columns) + q
                              select index).Take((int)Math.Max(0, target)).ToArray();
                foreach (var index in chosen)
                {
                    pruned[index] = true;
                }

                prunedSoFar += chosen.Length;
            }

            var j = order[p];
            var inverse = InverseFrom(p);
            var d = inverse(j, j);
            for (var r = 0; r < rows; r++)
            {
                var (value, _) = round(r, j, w[(r * columns) + j], 1 / d, pruned[(r * columns) + j]);
                result[(r * columns) + j] = value;
                var e = dead[j] ? 0 : (w[(r * columns) + j] - value) / d;
                foreach (var k in order.Skip(p + 1))
                {
                    w[(r * columns) + k] -= e * inverse(j, k);
                }
            }
        }

        return result;
    }

    private static double[] Invert(double[] matrix, int n)
    {
        var a = (double[])matrix.Clone();
        var inverse = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            inverse[(i * n) + i] = 1;
        }

        for (var c = 0; c < n; c++)
        {
            var pivot = Enumerable.Range(c, n - c).MaxBy(r => Math.Abs(a[(r * n) + c]));
            for (var k = 0; k < n; k++)
            {
                (a[(c * n) + k], a[(pivot * n) + k]) = (a[(pivot * n) + k], a[(c * n) + k]);
                (inverse[(c * n) + k], inverse[(pivot * n) + k]) = (inverse[(pivot * n) + k], inverse[(c * n) + k]);
            }

            var p = a[(c * n) + c];
            for (var k = 0; k < n; k++)
            {
                a[(c * n) + k] /= p;
                inverse[(c * n) + k] /= p;
            }

            for (var r = 0; r < n; r++)
            {
                if (r != c)
                {
                    var f = a[(r * n) + c];
                    for (var k = 0; k < n; k++)
                    {
                        a[(r * n) + k] -= f * a[(c * n) + k];
                        inverse[(r * n) + k] -= f * inverse[(c * n) + k];
                    }
                }
            }
        }

        return inverse;
    }

    // A symmetric, uniform grid per row: 2^bits levels (-1 .. 2^bits - 2) x step, the step from the row's range.
    private static RoundWeight Grid(float[] weights, int rows, int columns, int bits)
    {
        var steps = Steps(weights, rows, columns, bits);
        var top = (1 << bits) - 2;
        return (row, _, value, _, pruned) =>
        {
            if (pruned)
            {
                return (0f, 1);
            }

            var q = Math.Clamp(Math.Round(value / steps[row]), -1, top);
            return ((float)(q * steps[row]), (byte)(q + 1));
        };
    }

    private static float[] Steps(float[] weights, int rows, int columns, int bits) =>
        Enumerable.Range(0, rows).Select(r => Math.Max(1e-6f, weights.Skip(r * columns).Take(columns).Max(Math.Abs) / ((1 << bits) - 2))).ToArray();

    // H = X^T X of random inputs (some correlated, as real activations are), with one input that never fires.
    private static (float[] Weights, double[] Hessian) RandomLayer(int rows, int columns, int seed, int deadColumn, bool correlated = false)
    {
        var random = new Random(seed);
        var weights = Enumerable.Range(0, rows * columns).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
        var samples = (2 * columns) + 5;
        var x = new double[samples * columns];
        for (var s = 0; s < samples; s++)
        {
            var shared = random.NextDouble() - 0.5;
            for (var j = 0; j < columns; j++)
            {
                x[(s * columns) + j] = j == deadColumn ? 0 : (random.NextDouble() - 0.5) + (correlated ? 2 * shared : 0);
            }
        }

        var h = new double[columns * columns];
        for (var a = 0; a < columns; a++)
        {
            for (var b = 0; b < columns; b++)
            {
                double sum = 0;
                for (var s = 0; s < samples; s++)
                {
                    sum += x[(s * columns) + a] * x[(s * columns) + b];
                }

                h[(a * columns) + b] = sum;
            }
        }

        return (weights, h);
    }
}
