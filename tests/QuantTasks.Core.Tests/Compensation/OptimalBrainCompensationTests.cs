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
                plain[i] = grid(i / 24, i % 24, weights[i]).Value;
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
    /// Optimal Brain Surgeon, spelled out: the inverse of the dampened Hessian by Gauss-Jordan; after each column,
    /// every remaining weight moves by -e [H^-1]_jk / [H^-1]_jj, and the column leaves the inverse by the
    /// rank-one downdate H^-1 - H^-1[:, j] H^-1[j, :] / H^-1[j, j].
    /// </summary>
    private static float[] DenseReference(float[] weights, int rows, int columns, double[] hessian, RoundWeight round, CompensationOptions options)
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
        var result = new float[weights.Length];
        for (var r = 0; r < rows; r++)
        {
            var inverse = Invert(h, columns);
            var w = Enumerable.Range(0, columns).Select(j => (double)weights[(r * columns) + j]).ToArray();
            var remaining = new HashSet<int>(Enumerable.Range(0, columns));
            foreach (var j in order)
            {
                var (value, _) = round(r, j, w[j]);
                result[(r * columns) + j] = value;
                remaining.Remove(j);
                var d = inverse[(j * columns) + j];
                var e = dead[j] ? 0 : (w[j] - value) / d;
                foreach (var k in remaining)
                {
                    w[k] -= e * inverse[(j * columns) + k];
                }

                var next = (double[])inverse.Clone();
                foreach (var a in remaining)
                {
                    foreach (var b in remaining)
                    {
                        next[(a * columns) + b] -= inverse[(a * columns) + j] * inverse[(j * columns) + b] / d;
                    }
                }

                inverse = next;
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
        return (row, _, value) =>
        {
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
