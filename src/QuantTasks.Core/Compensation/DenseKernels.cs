using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace QuantTasks.Compensation;

/// <summary>
/// A row-major matrix inside a flat array: element (i, j) is <c>Data[Offset + i * Stride + j]</c>. Views let the
/// kernels work on blocks of a larger matrix without copying.
/// </summary>
internal readonly record struct MatrixView(double[] Data, long Offset, int Stride)
{
    /// <summary>The view starting at (row, column) of this one.</summary>
    public MatrixView At(int row, int column) => this with { Offset = Offset + ((long)row * Stride) + column };

    public ref double this[int row, int column] => ref Data[Offset + ((long)row * Stride) + column];
}

/// <summary>
/// The dense linear algebra behind compensation, written for cache reuse: one matrix-product kernel (C -= A B) in
/// register tiles of 4 x 8, a blocked Cholesky factorisation and a blocked triangular inverse built on it.
/// Every element's sum is formed in one fixed order (products subtracted one at a time, by increasing inner
/// index, as a separate multiply and subtract), whatever the tiling, thread count or vector width: the blob
/// depends on these bits, so any machine must produce the same ones.
/// </summary>
internal static class DenseKernels
{
    // Inner-dimension block: a 4 x 256 slice of A and a 256 x 8 panel of B stay in the first-level cache.
    private const int InnerBlock = 256;

    // Rows of A kept in the second-level cache while the panels of B go by.
    private const int RowBlock = 64;

    // Diagonal blocks of the factorisation and the inverse.
    private const int FactorBlock = 64;

    /// <summary>C (m x n) -= A (m x k) B (k x n), each element's products subtracted in increasing k.</summary>
    /// <param name="a">A, m x k.</param>
    /// <param name="b">B, k x n.</param>
    /// <param name="c">C, m x n, updated.</param>
    /// <param name="m">Rows of A and C.</param>
    /// <param name="n">Columns of B and C.</param>
    /// <param name="k">Columns of A, rows of B.</param>
    /// <param name="parallel">Split the columns of C over the cores (the result is the same either way).</param>
    public static void MultiplySubtract(MatrixView a, MatrixView b, MatrixView c, int m, int n, int k, bool parallel)
    {
        if (m <= 0 || n <= 0 || k <= 0)
        {
            return;
        }

        // Columns of C are independent; each thread takes whole multiples of the 8-wide tile.
        var chunk = parallel && (long)m * n * k >= 1 << 18 ? Math.Max(64, ((n / (4 * Environment.ProcessorCount)) + 7) & ~7) : n;
        var chunks = (n + chunk - 1) / chunk;
        if (chunks == 1)
        {
            MultiplySubtractSerial(a, b, c, m, n, k);
            return;
        }

        Parallel.For(0, chunks, s =>
        {
            var first = s * chunk;
            MultiplySubtractSerial(a, b.At(0, first), c.At(0, first), m, Math.Min(chunk, n - first), k);
        });
    }

    private static void MultiplySubtractSerial(MatrixView a, MatrixView b, MatrixView c, int m, int n, int k)
    {
        var vector = Vector256.IsHardwareAccelerated;
        var wide = vector ? n & ~7 : 0;
        for (var p0 = 0; p0 < k; p0 += InnerBlock)
        {
            var depth = Math.Min(InnerBlock, k - p0);
            for (var i0 = 0; i0 < m; i0 += RowBlock)
            {
                var rows = Math.Min(RowBlock, m - i0);
                for (var j = 0; j < wide; j += 8)
                {
                    var i = 0;
                    for (; i + 4 <= rows; i += 4)
                    {
                        Tile4x8(ref a[i0 + i, p0], a.Stride, ref b[p0, j], b.Stride, ref c[i0 + i, j], c.Stride, depth);
                    }

                    for (; i < rows; i++)
                    {
                        Tile1x8(ref a[i0 + i, p0], ref b[p0, j], b.Stride, ref c[i0 + i, j], depth);
                    }
                }

                // Columns past the last full tile, element by element in the same order.
                for (var i = 0; i < rows; i++)
                {
                    for (var j = wide; j < n; j++)
                    {
                        ref var target = ref c[i0 + i, j];
                        var value = target;
                        for (var p = 0; p < depth; p++)
                        {
                            value -= a[i0 + i, p0 + p] * b[p0 + p, j];
                        }

                        target = value;
                    }
                }
            }
        }
    }

    // Four rows by eight columns of C held in registers for the whole inner block.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x8(ref double a, int lda, ref double b, int ldb, ref double c, int ldc, int depth)
    {
        ref var c1 = ref Unsafe.Add(ref c, ldc);
        ref var c2 = ref Unsafe.Add(ref c, 2 * ldc);
        ref var c3 = ref Unsafe.Add(ref c, 3 * ldc);
        var c00 = Vector256.LoadUnsafe(ref c);
        var c01 = Vector256.LoadUnsafe(ref c, 4);
        var c10 = Vector256.LoadUnsafe(ref c1);
        var c11 = Vector256.LoadUnsafe(ref c1, 4);
        var c20 = Vector256.LoadUnsafe(ref c2);
        var c21 = Vector256.LoadUnsafe(ref c2, 4);
        var c30 = Vector256.LoadUnsafe(ref c3);
        var c31 = Vector256.LoadUnsafe(ref c3, 4);
        ref var a1 = ref Unsafe.Add(ref a, lda);
        ref var a2 = ref Unsafe.Add(ref a, 2 * lda);
        ref var a3 = ref Unsafe.Add(ref a, 3 * lda);
        for (nuint p = 0, bp = 0; p < (nuint)depth; p++, bp += (nuint)ldb)
        {
            var b0 = Vector256.LoadUnsafe(ref b, bp);
            var b1 = Vector256.LoadUnsafe(ref b, bp + 4);
            var x = Vector256.Create(Unsafe.Add(ref a, p));
            c00 -= x * b0;
            c01 -= x * b1;
            x = Vector256.Create(Unsafe.Add(ref a1, p));
            c10 -= x * b0;
            c11 -= x * b1;
            x = Vector256.Create(Unsafe.Add(ref a2, p));
            c20 -= x * b0;
            c21 -= x * b1;
            x = Vector256.Create(Unsafe.Add(ref a3, p));
            c30 -= x * b0;
            c31 -= x * b1;
        }

        c00.StoreUnsafe(ref c);
        c01.StoreUnsafe(ref c, 4);
        c10.StoreUnsafe(ref c1);
        c11.StoreUnsafe(ref c1, 4);
        c20.StoreUnsafe(ref c2);
        c21.StoreUnsafe(ref c2, 4);
        c30.StoreUnsafe(ref c3);
        c31.StoreUnsafe(ref c3, 4);
    }

    private static void Tile1x8(ref double a, ref double b, int ldb, ref double c, int depth)
    {
        var c0 = Vector256.LoadUnsafe(ref c);
        var c1 = Vector256.LoadUnsafe(ref c, 4);
        for (nuint p = 0, bp = 0; p < (nuint)depth; p++, bp += (nuint)ldb)
        {
            var x = Vector256.Create(Unsafe.Add(ref a, p));
            c0 -= x * Vector256.LoadUnsafe(ref b, bp);
            c1 -= x * Vector256.LoadUnsafe(ref b, bp + 4);
        }

        c0.StoreUnsafe(ref c);
        c1.StoreUnsafe(ref c, 4);
    }

    /// <summary>
    /// The lower Cholesky factor of the symmetric positive definite n x n matrix <paramref name="a"/>, in place
    /// (only the lower triangle is read; the upper one is left undefined). Right-looking by blocks: factor a
    /// diagonal block, solve the panel below it, subtract the panel's outer product from the trailing lower
    /// triangle with <see cref="MultiplySubtract"/>.
    /// </summary>
    /// <exception cref="NotPositiveDefiniteException">A pivot is not positive.</exception>
    public static void CholeskyInPlace(double[] a, int n)
    {
        var matrix = new MatrixView(a, 0, n);
        var transposed = new double[FactorBlock * (long)n];
        for (var j0 = 0; j0 < n; j0 += FactorBlock)
        {
            var width = Math.Min(FactorBlock, n - j0);
            var j1 = j0 + width;

            // The diagonal block, unblocked (earlier panels are already subtracted from it).
            for (var j = j0; j < j1; j++)
            {
                var diagonal = a[((long)j * n) + j];
                for (var p = j0; p < j; p++)
                {
                    diagonal -= a[((long)j * n) + p] * a[((long)j * n) + p];
                }

                if (!(diagonal > 0))
                {
                    throw new NotPositiveDefiniteException();
                }

                var pivot = Math.Sqrt(diagonal);
                a[((long)j * n) + j] = pivot;
                for (var i = j + 1; i < j1; i++)
                {
                    var value = a[((long)i * n) + j];
                    for (var p = j0; p < j; p++)
                    {
                        value -= a[((long)i * n) + p] * a[((long)j * n) + p];
                    }

                    a[((long)i * n) + j] = value / pivot;
                }
            }

            if (j1 == n)
            {
                break;
            }

            // The panel below: L21 = A21 L11^-T, row by row.
            var below = n - j1;
            Parallel.For(0, below, new ParallelOptions { MaxDegreeOfParallelism = (long)below * width * width < 1 << 16 ? 1 : -1 }, k =>
            {
                var i = j1 + k;
                for (var j = j0; j < j1; j++)
                {
                    var value = a[((long)i * n) + j];
                    for (var p = j0; p < j; p++)
                    {
                        value -= a[((long)i * n) + p] * a[((long)j * n) + p];
                    }

                    a[((long)i * n) + j] = value / a[((long)j * n) + j];
                }
            });

            // The trailing lower triangle: A22 -= L21 L21^T, one block row at a time up to its diagonal.
            for (var i = 0; i < below; i++)
            {
                for (var p = 0; p < width; p++)
                {
                    transposed[((long)p * below) + i] = a[((long)(j1 + i) * n) + j0 + p];
                }
            }

            var panel = new MatrixView(transposed, 0, below);
            var blocks = (below + FactorBlock - 1) / FactorBlock;
            Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = (long)below * below * width < 1 << 18 ? 1 : -1 }, block =>
            {
                // Later block rows are longer: take them first so the threads finish together.
                var r0 = (blocks - 1 - block) * FactorBlock;
                var rows = Math.Min(FactorBlock, below - r0);
                MultiplySubtractSerial(matrix.At(j1 + r0, j0), panel, matrix.At(j1 + r0, j1), rows, r0 + rows, width);
            });
        }
    }

    /// <summary>
    /// Replaces the lower triangular n x n matrix <paramref name="l"/> (lower triangle read) by its inverse, lower
    /// triangular with the upper triangle zero. In place, so a layer's factorisation needs one n x n matrix, not
    /// two (ResNet-50's widest layers: 170 MB each). Column blocks go right to left: with C^-1 already in place
    /// below and right of block J, the blocks under its diagonal are X = -C^-1 (B L_JJ^-1), B the blocks' old
    /// values, formed one block row at a time by <see cref="MultiplySubtract"/>'s kernel (rows in parallel).
    /// </summary>
    public static void InvertLowerInPlace(double[] l, int n)
    {
        var matrix = new MatrixView(l, 0, n);
        var diagonalInverse = new double[FactorBlock * FactorBlock];
        var inverse = new MatrixView(diagonalInverse, 0, FactorBlock);
        var scaled = new double[(long)FactorBlock * n];
        for (var j0 = ((n - 1) / FactorBlock) * FactorBlock; j0 >= 0; j0 -= FactorBlock)
        {
            var width = Math.Min(FactorBlock, n - j0);
            var j1 = j0 + width;

            // L_JJ^-1 by forward substitution, column by column, into scratch (its upper triangle zero).
            Array.Clear(diagonalInverse);
            for (var c = 0; c < width; c++)
            {
                inverse[c, c] = 1 / matrix[j0 + c, j0 + c];
                for (var i = c + 1; i < width; i++)
                {
                    double value = 0;
                    for (var p = c; p < i; p++)
                    {
                        value -= matrix[j0 + i, j0 + p] * inverse[p, c];
                    }

                    inverse[i, c] = value / matrix[j0 + i, j0 + i];
                }
            }

            var below = n - j1;
            if (below > 0)
            {
                // T = B L_JJ^-1 (below x width, row-major in scratch), then B's place is cleared for the product.
                var t = new MatrixView(scaled, 0, width);
                Parallel.For(0, below, new ParallelOptions { MaxDegreeOfParallelism = (long)below * width * width < 1 << 16 ? 1 : -1 }, k =>
                {
                    var i = j1 + k;
                    for (var c = 0; c < width; c++)
                    {
                        double value = 0;
                        for (var p = c; p < width; p++)
                        {
                            value += matrix[i, j0 + p] * inverse[p, c];
                        }

                        t[k, c] = value;
                    }

                    l.AsSpan((int)(((long)i * n) + j0), width).Clear();
                });

                // X_IJ = -sum over P <= I of C^-1_IP T_P: only the lower triangle of C^-1 is non-zero, so each block
                // row stops at its own diagonal block. Longer block rows first, so the threads finish together.
                var blocks = (below + FactorBlock - 1) / FactorBlock;
                Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = (long)below * below * width < 1 << 18 ? 1 : -1 }, block =>
                {
                    var r0 = (blocks - 1 - block) * FactorBlock;
                    var rows = Math.Min(FactorBlock, below - r0);
                    MultiplySubtractSerial(matrix.At(j1 + r0, j1), t, matrix.At(j1 + r0, j0), rows, width, r0 + rows);
                });
            }

            // The diagonal block last: the products above read only the blocks right of it.
            for (var i = 0; i < width; i++)
            {
                for (var c = 0; c < width; c++)
                {
                    matrix[j0 + i, j0 + c] = inverse[i, c];
                }
            }
        }

        // The strict upper triangle: the factorisation leaves values there inside its diagonal blocks.
        for (var i = 0; i < n; i++)
        {
            l.AsSpan((int)(((long)i * n) + i + 1), n - i - 1).Clear();
        }
    }
}
