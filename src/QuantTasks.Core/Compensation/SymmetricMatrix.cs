using QuantTasks.Diagnostics;

namespace QuantTasks.Compensation;

/// <summary>Writes rows <paramref name="first"/> to first + count - 1 of a matrix D (count x n, row-major) into <paramref name="target"/>.</summary>
internal delegate void DeltaRows(int first, int count, Span<double> target);

/// <summary>
/// A symmetric n x n float64 matrix (a layer Hessian) kept as its upper triangle, in panels of
/// <see cref="PanelWidth"/> columns: panel p holds rows 0 to the panel's last column of its columns, dense and
/// row-major. A network's layer Hessians are all accumulated in one pass over the data, so they are all held at
/// once; storing each once instead of twice halves that (ResNet-50: 1.0 GB as full matrices, 0.53 GB in panels),
/// and the Gram sums skip the lower triangle's products. Each panel is the product kernel's output view, so the
/// sums are as fast per element as on a full matrix, and no array exceeds n x <see cref="PanelWidth"/> elements.
/// Once accumulated, a matrix can be spilled to a <see cref="SpillFile"/>: it then holds its panels only between a
/// use and the next <see cref="Release"/>, and reads them back on the next use (any thread; a method that is using
/// the panels keeps its own reference, so a release meanwhile only drops the matrix's).
/// </summary>
internal sealed class SymmetricMatrix
{
    /// <summary>Columns per panel: the diagonal blocks (stored whole) waste a 1/(2 x panels) share at most.</summary>
    public const int PanelWidth = 256;

    private readonly Lock _loading = new();
    private double[][]? _panels;
    private SpillFile? _spill;
    private long[]? _offsets;

    /// <summary>A zero matrix of <paramref name="size"/> x <paramref name="size"/>.</summary>
    public SymmetricMatrix(int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        Size = size;
        _ = Panels();
    }

    /// <summary>Rows and columns.</summary>
    public int Size { get; }

    /// <summary>Element (i, j), the same as (j, i).</summary>
    public double this[int i, int j]
    {
        get
        {
            var (row, column) = i <= j ? (i, j) : (j, i);
            var p = column / PanelWidth;
            return Panels()[p][((long)row * Width(p)) + column - (p * PanelWidth)];
        }
    }

    /// <summary>The symmetric matrix whose upper triangle is that of the row-major <paramref name="dense"/> (the lower one is not read).</summary>
    public static SymmetricMatrix FromDense(double[] dense, int size)
    {
        ArgumentNullException.ThrowIfNull(dense);
        if (dense.Length != (long)size * size)
        {
            throw new ArgumentException($"A {size} x {size} matrix needs {(long)size * size} elements, not {dense.Length}.", nameof(dense));
        }

        var matrix = new SymmetricMatrix(size);
        var panels = matrix.Panels();
        for (var p = 0; p < panels.Length; p++)
        {
            var (first, width) = (p * PanelWidth, Width(p, size));
            for (var i = 0; i < matrix.End(p); i++)
            {
                Array.Copy(dense, ((long)i * size) + first, panels[p], (long)i * width, width);
            }
        }

        return matrix;
    }

    /// <summary>The full row-major matrix, both triangles (for references and tests; n x n elements).</summary>
    public double[] ToDense()
    {
        var dense = new double[(long)Size * Size];
        for (var i = 0; i < Size; i++)
        {
            for (var j = 0; j < Size; j++)
            {
                dense[((long)i * Size) + j] = this[i, j];
            }
        }

        return dense;
    }

    /// <summary>
    /// Adds X^T X for the <paramref name="depth"/> rows of X (depth x n, row-major in <paramref name="rows"/>), given
    /// also as -X^T (n x depth in <paramref name="negatedTranspose"/>): per panel, its rows of -X^T times its columns
    /// of X subtracted, each element summed in the kernel's fixed order.
    /// </summary>
    public void AddGram(double[] rows, double[] negatedTranspose, int depth)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(negatedTranspose);
        if (_spill is not null)
        {
            throw new InvalidOperationException("A spilled matrix is read-only: the sums would not reach its file.");
        }

        var panels = Panels();
        for (var p = 0; p < panels.Length; p++)
        {
            var width = Width(p);
            DenseKernels.MultiplySubtract(new MatrixView(negatedTranspose, 0, depth), new MatrixView(rows, p * PanelWidth, Size),
                new MatrixView(panels[p], 0, width), End(p), width, depth, parallel: true);
        }
    }

    /// <summary>
    /// sum_r d_r^T M d_r over the rows of D (<paramref name="rows"/> x n, row-major): per panel, the columns' share
    /// from the rows above the diagonal block (counted twice, for the lower triangle not stored) and from the
    /// diagonal block, products by the kernel and summed in row order, so the result does not depend on threads.
    /// </summary>
    public double QuadraticForms(double[] delta, int rows)
    {
        ArgumentNullException.ThrowIfNull(delta);
        if (delta.Length != (long)rows * Size)
        {
            throw new ArgumentException($"{rows} rows of {Size} need {(long)rows * Size} elements, not {delta.Length}.", nameof(delta));
        }

        return QuadraticForms(rows, (first, count, target) => delta.AsSpan(first * Size, count * Size).CopyTo(target));
    }

    /// <summary>
    /// The same sum with D made <see cref="ChunkRows"/> rows at a time by <paramref name="deltaRows"/>: the search
    /// calls this for every candidate of every layer, and a whole D in float64 is twice the layer's float32 weights
    /// (ResNet-50's widest: 19 MB per call, three calls per candidate), garbage the collector would let pile up.
    /// The chunks are the product kernel's row blocks, so the Hessian is not streamed more often than it was.
    /// </summary>
    public double QuadraticForms(int rows, DeltaRows deltaRows)
    {
        ArgumentNullException.ThrowIfNull(deltaRows);
        var chunk = Math.Clamp(rows, 1, ChunkRows);
        var widest = Math.Min(PanelWidth, Size);
        var pool = System.Buffers.ArrayPool<double>.Shared;
        var delta = pool.Rent(chunk * Size);
        var above = pool.Rent(chunk * widest);
        var block = pool.Rent(chunk * widest);
        var panels = Panels();
        try
        {
            double total = 0;
            var d = new MatrixView(delta, 0, Size);
            for (var r0 = 0; r0 < rows; r0 += chunk)
            {
                var count = Math.Min(chunk, rows - r0);
                deltaRows(r0, count, delta.AsSpan(0, count * Size));
                for (var p = 0; p < panels.Length; p++)
                {
                    var (first, width) = (p * PanelWidth, Width(p));
                    var panel = new MatrixView(panels[p], 0, width);
                    Array.Clear(above, 0, count * width);
                    Array.Clear(block, 0, count * width);
                    DenseKernels.MultiplySubtract(d, panel, new MatrixView(above, 0, width), count, width, first, parallel: true);
                    DenseKernels.MultiplySubtract(d.At(0, first), panel.At(first, 0), new MatrixView(block, 0, width), count, width, width, parallel: true);
                    for (var r = 0; r < count; r++)
                    {
                        for (var c = 0; c < width; c++)
                        {
                            var at = (r * width) + c;
                            total -= delta[(r * Size) + first + c] * ((2 * above[at]) + block[at]);
                        }
                    }
                }
            }

            return total;
        }
        finally
        {
            pool.Return(delta);
            pool.Return(above);
            pool.Return(block);
        }
    }

    /// <summary>The bytes the panels take in memory (and in a spill file).</summary>
    public long Bytes => BytesFor(Size);

    /// <summary>The bytes a matrix of <paramref name="size"/> x <paramref name="size"/> holds in memory (its panels).</summary>
    public static long BytesFor(int size)
    {
        long bytes = 0;
        for (var p = 0; p * PanelWidth < size; p++)
        {
            bytes += (long)((p * PanelWidth) + Width(p, size)) * Width(p, size) * sizeof(double);
        }

        return bytes;
    }

    /// <summary>Whether the panels are in a spill file.</summary>
    public bool IsSpilled => _spill is not null;

    /// <summary>Whether the panels are in memory now.</summary>
    public bool IsLoaded => Volatile.Read(ref _panels) is not null;

    /// <summary>
    /// Writes the panels to <paramref name="file"/> and drops them from memory; from now on the matrix is
    /// read-only and reads them back when used. Once only: a second call does nothing.
    /// </summary>
    /// <exception cref="IOException">The file cannot be written; the matrix stays in memory, as before.</exception>
    public void SpillTo(SpillFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        lock (_loading)
        {
            if (_spill is not null)
            {
                return;
            }

            var panels = Panels();
            var offsets = panels.Select(panel => file.Write(panel)).ToArray();
            (_spill, _offsets) = (file, offsets);
            Volatile.Write(ref _panels, null);
        }
    }

    /// <summary>Drops the in-memory panels of a spilled matrix (the next use reads them again); nothing otherwise.</summary>
    public void Release()
    {
        if (_spill is not null)
        {
            Volatile.Write(ref _panels, null);
        }
    }

    // The panels, read back from the spill file when released (the indexer's path: the load stays out of line).
    private double[][] Panels() => Volatile.Read(ref _panels) ?? Load();

    private double[][] Load()
    {
        lock (_loading)
        {
            var panels = _panels;
            if (panels is null)
            {
                panels = new double[PanelCount][];
                for (var p = 0; p < panels.Length; p++)
                {
                    panels[p] = new double[(long)End(p) * Width(p)];
                    if (_spill is not null)
                    {
                        try
                        {
                            _spill.Read(_offsets![p], panels[p]);
                        }
                        catch (Exception e) when (e is IOException or ObjectDisposedException)
                        {
                            throw new QuantException(ErrorCode.FileAccess,
                                $"Cannot read back a layer Hessian from the scratch file '{_spill.Path}': {e.Message}", new SourceLocation(_spill.Path), e);
                        }
                    }
                }

                Volatile.Write(ref _panels, panels);
            }

            return panels;
        }
    }

    private int PanelCount => (Size + PanelWidth - 1) / PanelWidth;

    // Rows of D formed at once: the product kernel's row block.
    private const int ChunkRows = 64;

    private static int Width(int panel, int size) => Math.Min(PanelWidth, size - (panel * PanelWidth));

    private int Width(int panel) => Width(panel, Size);

    // Rows held by a panel: every row up to its last column.
    private int End(int panel) => (panel * PanelWidth) + Width(panel);
}
