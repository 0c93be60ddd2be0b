using QuantTasks.Compensation;
using QuantTasks.Diagnostics;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Compensation;

/// <summary>
/// Layer Hessians moved to a scratch file: every value must come back with its very bits, from any thread and as
/// often as released, and the file (and a folder it had to create) must be gone once disposed, or at once where an
/// open file can lose its name.
/// </summary>
public sealed class SpillFileTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Arrays_come_back_from_their_offsets_and_the_file_goes_with_dispose()
    {
        string path;
        using (var file = new SpillFile(_folder.Path))
        {
            path = file.Path;
            var first = Enumerable.Range(0, 1000).Select(i => Math.Sqrt(i) - 3).ToArray();
            var second = new[] { double.Epsilon, -0.0, double.MaxValue, Math.PI };
            var a = file.Write(first);
            var b = file.Write(second);
            Assert.Equal(0, a);
            Assert.Equal(8000, b);
            Assert.Equal(8032, file.Length);
            Assert.Equal(OperatingSystem.IsWindows(), File.Exists(path)); // elsewhere unlinked at once, the handle holds the data
            Assert.StartsWith(".", Path.GetFileName(path), StringComparison.Ordinal);

            var back = new double[4];
            file.Read(b, back);
            Assert.Equal(second.Select(BitConverter.DoubleToInt64Bits), back.Select(BitConverter.DoubleToInt64Bits));
            var again = new double[1000];
            file.Read(a, again);
            Assert.Equal(first, again);
            Assert.Throws<IOException>(() => file.Read(8000, new double[5]));
        }

        Assert.False(File.Exists(path));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_folder.Path));
    }

    [Fact]
    public void Folders_it_created_are_removed_again_and_one_that_existed_stays()
    {
        var created = _folder.File("out/nested");
        using (new SpillFile(created))
        {
            Assert.Equal(OperatingSystem.IsWindows(), Directory.Exists(created));
        }

        Assert.False(Directory.Exists(_folder.File("out")));
        using (new SpillFile(_folder.Path))
        {
        }

        Assert.True(Directory.Exists(_folder.Path));
    }

    [Fact]
    public void A_spilled_matrix_reads_back_the_same_bits_after_every_release_and_from_many_threads()
    {
        const int n = (2 * SymmetricMatrix.PanelWidth) + 45;
        var random = new Random(11);
        var dense = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = i; j < n; j++)
            {
                dense[(i * n) + j] = dense[(j * n) + i] = (random.NextDouble() * 2) - 1;
            }
        }

        var delta = Enumerable.Range(0, 3 * n).Select(_ => random.NextDouble() - 0.5).ToArray();
        var memory = SymmetricMatrix.FromDense(dense, n);
        var spilled = SymmetricMatrix.FromDense(dense, n);
        var expected = memory.QuadraticForms(delta, 3);

        using var file = new SpillFile(_folder.Path);
        spilled.SpillTo(file);
        Assert.True(spilled.IsSpilled);
        Assert.False(spilled.IsLoaded);
        Assert.Equal(spilled.Bytes, file.Length);
        Assert.Equal(memory.Bytes, spilled.Bytes);

        Assert.Equal(dense, spilled.ToDense());
        Assert.True(spilled.IsLoaded);
        spilled.Release();
        Assert.False(spilled.IsLoaded);
        Assert.Equal(BitConverter.DoubleToInt64Bits(expected), BitConverter.DoubleToInt64Bits(spilled.QuadraticForms(delta, 3)));

        // Releases while other threads use it: each use holds its own panels, so every result is the same.
        var results = new double[64];
        Parallel.For(0, results.Length, k =>
        {
            results[k] = spilled.QuadraticForms(delta, 3);
            spilled.Release();
        });
        Assert.All(results, r => Assert.Equal(BitConverter.DoubleToInt64Bits(expected), BitConverter.DoubleToInt64Bits(r)));

        spilled.SpillTo(file); // once only
        Assert.Equal(spilled.Bytes, file.Length);
        Assert.Throws<InvalidOperationException>(() => spilled.AddGram(new double[n], new double[n], 1));
    }

    [Fact]
    public void A_folder_that_cannot_be_made_is_an_IO_error_and_leaves_nothing()
    {
        var blocker = _folder.File("not-a-folder");
        File.WriteAllText(blocker, "a file where the output folder would go");

        Assert.ThrowsAny<IOException>(() => new SpillFile(Path.Combine(blocker, "out")));

        Assert.Equal([blocker], Directory.EnumerateFileSystemEntries(_folder.Path));
        Assert.Equal("a file where the output folder would go", File.ReadAllText(blocker));
    }

    [Fact]
    public void An_in_memory_matrix_ignores_release()
    {
        var matrix = SymmetricMatrix.FromDense([2, 1, 1, 3], 2);
        matrix.Release();
        Assert.True(matrix.IsLoaded);
        Assert.False(matrix.IsSpilled);
        Assert.Equal(3, matrix[1, 1]);
    }

    [Fact]
    public void A_spill_file_gone_before_its_matrix_is_read_is_a_coded_error_naming_the_file()
    {
        var matrix = SymmetricMatrix.FromDense([2, 1, 1, 3], 2);
        var file = new SpillFile(_folder.Path);
        matrix.SpillTo(file);
        file.Dispose();

        var error = Assert.Throws<QuantException>(() => matrix[0, 1]);
        Assert.Equal(ErrorCode.FileAccess, error.Code);
        Assert.Contains(file.Path, error.Message, StringComparison.Ordinal);
    }
}
