using QuantTasks.Compensation;

namespace QuantTasks.Core.Tests.Compensation;

/// <summary>
/// The dense kernels against plain loops: the product must give the very bits of a naive triple loop that
/// subtracts the products one at a time in increasing inner index (that order is what makes blobs the same on
/// every machine), for shapes that hit every edge of the tiles and blocks, serial or parallel; the blocked
/// Cholesky factor and triangular inverse must match unblocked textbook versions.
/// </summary>
public sealed class DenseKernelsTests
{
    [Theory]
    [InlineData(1, 1, 1, false)]
    [InlineData(3, 7, 5, false)]
    [InlineData(4, 8, 1, false)]
    [InlineData(5, 9, 257, false)]
    [InlineData(67, 130, 300, false)]
    [InlineData(67, 1031, 129, true)]
    [InlineData(130, 520, 513, true)]
    public void The_product_has_the_bits_of_the_naive_loop(int m, int n, int k, bool parallel)
    {
        var random = new Random((m * 31) + n + k);
        // Views with strides wider than the matrices and offsets, as the compensation uses them.
        var a = Fill(random, (m * (k + 3)) + 5);
        var b = Fill(random, (k * (n + 2)) + 7);
        var c = Fill(random, (m * (n + 1)) + 11);
        var expected = (double[])c.Clone();
        for (var i = 0; i < m; i++)
        {
            for (var j = 0; j < n; j++)
            {
                var value = expected[11 + (i * (n + 1)) + j];
                for (var p = 0; p < k; p++)
                {
                    value -= a[5 + (i * (k + 3)) + p] * b[7 + (p * (n + 2)) + j];
                }

                expected[11 + (i * (n + 1)) + j] = value;
            }
        }

        DenseKernels.MultiplySubtract(new MatrixView(a, 5, k + 3), new MatrixView(b, 7, n + 2), new MatrixView(c, 11, n + 1), m, n, k, parallel);

        for (var i = 0; i < c.Length; i++)
        {
            Assert.True(BitConverter.DoubleToInt64Bits(expected[i]) == BitConverter.DoubleToInt64Bits(c[i]), $"element {i}: {c[i]:R} vs {expected[i]:R}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(200)]
    [InlineData(333)]
    public void Cholesky_and_inverse_match_the_unblocked_ones(int n)
    {
        var random = new Random(n);
        var v = Fill(random, n * (n + 4));
        var h = new double[n * n];
        for (var a = 0; a < n; a++)
        {
            for (var b = 0; b < n; b++)
            {
                double sum = a == b ? 0.1 : 0;
                for (var p = 0; p < n + 4; p++)
                {
                    sum += v[(a * (n + 4)) + p] * v[(b * (n + 4)) + p];
                }

                h[(a * n) + b] = sum;
            }
        }

        // Textbook Cholesky-Banachiewicz and forward substitution for every column of the identity.
        var l = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                var sum = h[(i * n) + j];
                for (var p = 0; p < j; p++)
                {
                    sum -= l[(i * n) + p] * l[(j * n) + p];
                }

                l[(i * n) + j] = i == j ? Math.Sqrt(sum) : sum / l[(j * n) + j];
            }
        }

        var inverse = new double[n * n];
        for (var j = 0; j < n; j++)
        {
            for (var i = j; i < n; i++)
            {
                var sum = i == j ? 1.0 : 0.0;
                for (var p = j; p < i; p++)
                {
                    sum -= l[(i * n) + p] * inverse[(p * n) + j];
                }

                inverse[(i * n) + j] = sum / l[(i * n) + i];
            }
        }

        var blocked = (double[])h.Clone();
        DenseKernels.CholeskyInPlace(blocked, n);
        var blockedInverse = (double[])blocked.Clone();
        DenseKernels.InvertLowerInPlace(blockedInverse, n);

        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                Assert.Equal(l[(i * n) + j], blocked[(i * n) + j], 1e-10 * Math.Max(1, Math.Abs(l[(i * n) + i])));
                Assert.Equal(inverse[(i * n) + j], blockedInverse[(i * n) + j], 1e-9 * Math.Max(1, Math.Abs(inverse[(j * n) + j])));
            }

            for (var j = i + 1; j < n; j++)
            {
                Assert.Equal(0, blockedInverse[(i * n) + j]);
            }
        }
    }

    [Fact]
    public void A_matrix_that_is_not_positive_definite_is_refused()
    {
        var h = new double[] { 1, 2, 2, 1 };
        Assert.Throws<NotPositiveDefiniteException>(() => DenseKernels.CholeskyInPlace(h, 2));
    }

    private static double[] Fill(Random random, int length)
    {
        var values = new double[length];
        for (var i = 0; i < length; i++)
        {
            values[i] = random.NextDouble() - 0.5;
        }

        return values;
    }
}
