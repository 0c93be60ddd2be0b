using System.IO.Compression;
using System.Text;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Data;

public class DataFileTests
{
    [Fact]
    public void Reads_an_npz_written_by_NumPy()
    {
        var data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));
        var input = data.Get("input");
        var labels = data.Labels()!;

        Assert.Equal(["input", "label"], data.ArrayNames);
        Assert.Equal([512L, 1, 28, 28], input.Shape);
        Assert.Equal(NpyDType.Float32, input.DType);
        Assert.Equal(512 * 784, input.Floats!.Length);
        Assert.InRange(input.Floats.Max(), 0.9f, 1f);
        Assert.Equal(512, labels.Length);
        Assert.All(labels, l => Assert.InRange(l, 0, 9));
    }

    [Fact]
    public void Matches_the_reference_arrays_PyTorch_saw()
    {
        var reference = DataFile.Load(Fixtures.Data("lenet5-reference.npz")).Get("input").Floats!;
        var test = DataFile.Load(Fixtures.Data("digits-test.npz")).Get("input").Floats!;

        Assert.Equal(test.AsSpan(0, reference.Length).ToArray(), reference);
    }

    /// <summary>
    /// Stages take views of the calibration file (the samples they need): a view shares the arrays the file has read,
    /// so the samples are held once. The file is gone before the views read: a view that read it again would fail.
    /// </summary>
    [Fact]
    public void A_view_of_the_first_samples_shares_the_arrays_the_file_has_read()
    {
        using var temp = new TempFolder();
        var path = temp.File("d.npz");
        File.Copy(Fixtures.Data("digits-calibration.npz"), path);
        var data = DataFile.Load(path);
        var input = data.Get("input");
        var labels = data.Labels()!;
        File.Delete(path);

        var all = data.Take(10_000);
        var first = data.Take(100).Take(300);

        Assert.Same(input, all.Get("input"));
        Assert.Same(input.Floats, all.Take(512).Get("input").Floats);
        Assert.Equal([100L, 1, 28, 28], first.Get("input").Shape);
        Assert.Equal(input.Floats.AsSpan(0, 100 * 784).ToArray(), first.Get("input").Floats);
        Assert.Equal(labels[..100], first.Labels());
    }

    [Theory]
    [InlineData("<f4", 4)]
    [InlineData("<i4", 4)]
    [InlineData("<i8", 8)]
    public void Reads_a_single_npy_array_as_input(string descr, int size)
    {
        using var temp = new TempFolder();
        var data = new byte[6 * size];
        data[0] = 1;
        File.WriteAllBytes(temp.File("x.npy"), Npy(descr, "(2, 3)", data));

        var array = DataFile.Load(temp.File("x.npy")).Get("input");

        Assert.Equal([2L, 3], array.Shape);
        Assert.Equal(6, array.Length);
        if (descr == "<f4")
        {
            Assert.Equal(BitConverter.Int32BitsToSingle(1), array.Floats![0]);
        }
        else
        {
            Assert.Equal(1L, array.Integers![0]);
        }
    }

    [Fact]
    public void A_missing_array_is_QT1302_and_lists_the_arrays_there_are()
    {
        var data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));

        var error = Assert.Throws<QuantException>(() => data.Get("pixels"));

        Assert.Equal(ErrorCode.DataMissingArray, error.Code);
        Assert.Contains("'pixels'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'input', 'label'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("<f8")]
    [InlineData("|u1")]
    [InlineData("<f2")]
    public void A_wrong_dtype_is_QT1303(string descr)
    {
        using var temp = new TempFolder();
        WriteNpz(temp.File("d.npz"), ("input", Npy(descr, "(4,)", new byte[32])));

        var error = Assert.Throws<QuantException>(() => DataFile.Load(temp.File("d.npz")).Get("input"));

        Assert.Equal(ErrorCode.DataWrongType, error.Code);
        Assert.Contains(descr, error.Message, StringComparison.Ordinal);
        Assert.Contains("'input'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Float_labels_are_QT1303()
    {
        using var temp = new TempFolder();
        WriteNpz(temp.File("d.npz"), ("label", Npy("<f4", "(2,)", new byte[8])));

        var error = Assert.Throws<QuantException>(() => DataFile.Load(temp.File("d.npz")).Labels());

        Assert.Equal(ErrorCode.DataWrongType, error.Code);
    }

    [Fact]
    public void A_truncated_member_is_QT1304()
    {
        using var temp = new TempFolder();
        WriteNpz(temp.File("d.npz"), ("input", Npy("<f4", "(10, 784)", new byte[100])));

        var error = Assert.Throws<QuantException>(() => DataFile.Load(temp.File("d.npz")).Get("input"));

        Assert.Equal(ErrorCode.DataTruncated, error.Code);
        Assert.Contains("31360 bytes", error.Message, StringComparison.Ordinal);
        Assert.Equal(temp.File("d.npz"), error.Location!.File);
    }

    [Fact]
    public void A_truncated_archive_is_an_error_not_a_crash()
    {
        using var temp = new TempFolder();
        var bytes = File.ReadAllBytes(Fixtures.Data("digits-calibration.npz"));
        File.WriteAllBytes(temp.File("cut.npz"), bytes[..(bytes.Length / 2)]);

        var error = Assert.Throws<QuantException>(() => DataFile.Load(temp.File("cut.npz")).Get("input"));

        Assert.True(error.Code is ErrorCode.DataTruncated or ErrorCode.DataUnreadable, error.Code.Format());
    }

    [Fact]
    public void Fortran_order_and_big_endian_are_QT1305()
    {
        using var temp = new TempFolder();
        File.WriteAllBytes(temp.File("f.npy"), Npy("<f4", "(2, 2)", new byte[16], fortran: true));
        File.WriteAllBytes(temp.File("b.npy"), Npy(">f4", "(2, 2)", new byte[16]));

        Assert.Equal(ErrorCode.DataUnsupportedLayout, Assert.Throws<QuantException>(() => DataFile.Load(temp.File("f.npy")).Get("input")).Code);
        Assert.Equal(ErrorCode.DataUnsupportedLayout, Assert.Throws<QuantException>(() => DataFile.Load(temp.File("b.npy")).Get("input")).Code);
    }

    [Fact]
    public void A_file_that_is_neither_npz_nor_npy_is_QT1301()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("x.npz"), "input,label\n0.5,3\n");

        Assert.Equal(ErrorCode.DataUnreadable, Assert.Throws<QuantException>(() => DataFile.Load(temp.File("x.npz"))).Code);
    }

    private static byte[] Npy(string descr, string shape, byte[] data, bool fortran = false) =>
        NpzWriter.Npy(descr, shape.Trim('(', ')').Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray(), data, fortran);

    private static void WriteNpz(string path, params (string Name, byte[] Bytes)[] members) => NpzWriter.Write(path, members);
}
