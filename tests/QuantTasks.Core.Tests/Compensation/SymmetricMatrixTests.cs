using QuantTasks.Compensation;

namespace QuantTasks.Core.Tests.Compensation;

/// <summary>
/// The layer Hessian's upper-triangle storage against plain loops, for sizes below, at and across the panel width
/// (one panel, exactly two, and a partial last one): the Gram sums must have the very bits of the naive loop (the
/// blob depends on them, and the full-matrix storage before it had them), both triangles must read alike, and the
/// quadratic forms must equal the brute-force double sum.
/// </summary>
public sealed class SymmetricMatrixTests
{
    [Theory]
    [InlineData(1, 3)]
    [InlineData(7, 1)]
    [InlineData(SymmetricMatrix.PanelWidth, 9)]
    [InlineData(SymmetricMatrix.PanelWidth + 1, 5)]
    [InlineData((2 * SymmetricMatrix.PanelWidth) + 45, 300)]
    public void Gram_sums_have_the_bits_of_the_naive_loop_in_both_triangles(int n, int depth)
    {
        var random = new Random((n * 7) + depth);
        var matrix = new SymmetricMatrix(n);
        var expected = new double[(long)n * n];
        for (var batch = 0; batch < 2; batch++)
        {
            var (rows, negatedTranspose) = Rows(random, n, depth);
            matrix.AddGram(rows, negatedTranspose, depth);
            for (var i = 0; i < n; i++)
            {
                for (var j = 0; j < n; j++)
                {
                    var value = expected[((long)i * n) + j];
                    for (var p = 0; p < depth; p++)
                    {
                        value -= negatedTranspose[((long)i * depth) + p] * rows[((long)p * n) + j];
                    }

                    expected[((long)i * n) + j] = value;
                }
            }
        }

        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++)
            {
                Assert.Equal(expected[((long)i * n) + j], matrix[i, j]);
            }
        }

        Assert.Equal(expected, matrix.ToDense());
    }

    [Theory]
    [InlineData(5, 3)]
    [InlineData(SymmetricMatrix.PanelWidth + 1, 4)]
    [InlineData((2 * SymmetricMatrix.PanelWidth) + 45, 6)]
    [InlineData(37, 64)]
    [InlineData(SymmetricMatrix.PanelWidth + 3, 150)]
    public void Quadratic_forms_equal_the_double_sum(int n, int rows)
    {
        var random = new Random(n + rows);
        var dense = new double[(long)n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = i; j < n; j++)
            {
                dense[((long)i * n) + j] = dense[((long)j * n) + i] = (random.NextDouble() * 2) - 1 + (i == j ? n : 0);
            }
        }

        var delta = Enumerable.Range(0, rows * n).Select(_ => (random.NextDouble() * 2) - 1).ToArray();
        double expected = 0;
        for (var r = 0; r < rows; r++)
        {
            for (var i = 0; i < n; i++)
            {
                for (var j = 0; j < n; j++)
                {
                    expected += delta[(r * n) + i] * dense[((long)i * n) + j] * delta[(r * n) + j];
                }
            }
        }

        var packed = SymmetricMatrix.FromDense(dense, n);
        Assert.Equal(expected, packed.QuadraticForms(delta, rows), Math.Abs(expected) * 1e-12);
        Assert.Equal(OptimalBrainCompensation.QuadraticForms(delta, rows, n, dense), packed.QuadraticForms(delta, rows), Math.Abs(expected) * 1e-12);
        Assert.Equal(dense, packed.ToDense());

        // The rows are made a chunk at a time (150 rows: two whole chunks and a part), each asked for once, in order.
        var asked = new List<(int First, int Count)>();
        var chunked = packed.QuadraticForms(rows, (first, count, target) =>
        {
            asked.Add((first, count));
            delta.AsSpan(first * n, count * n).CopyTo(target);
        });
        Assert.Equal(packed.QuadraticForms(delta, rows), chunked);
        Assert.Equal(rows, asked.Sum(a => a.Count));
        Assert.Equal(asked.Select(a => a.First), asked.Select((a, k) => asked.Take(k).Sum(b => b.Count)));
    }

    [Fact]
    public void Only_the_upper_triangle_of_a_dense_matrix_is_read()
    {
        var n = SymmetricMatrix.PanelWidth + 3;
        var dense = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++)
            {
                dense[(i * n) + j] = i <= j ? i + (j * 0.001) : double.NaN;
            }
        }

        var packed = SymmetricMatrix.FromDense(dense, n);
        Assert.Equal(1.002, packed[2, 1]);
        Assert.Equal(packed[n - 2, n - 1], packed[n - 1, n - 2]);
        Assert.DoesNotContain(packed.ToDense(), double.IsNaN);
        Assert.Throws<ArgumentException>(() => SymmetricMatrix.FromDense(dense, n - 1));
    }

    // depth x n rows of X and the same as -X^T (n x depth), as the Gram accumulation hands them over.
    private static (double[] Rows, double[] NegatedTranspose) Rows(Random random, int n, int depth)
    {
        var rows = new double[(long)depth * n];
        var negatedTranspose = new double[(long)n * depth];
        for (var p = 0; p < depth; p++)
        {
            for (var a = 0; a < n; a++)
            {
                var value = (random.NextDouble() * 2) - 1;
                rows[((long)p * n) + a] = value;
                negatedTranspose[((long)a * depth) + p] = -value;
            }
        }

        return (rows, negatedTranspose);
    }
}
