using System.IO.Compression;
using System.Text;

namespace QuantTasks.Tests;

/// <summary>Writes NumPy .npy arrays and .npz archives, as numpy.save and numpy.savez do, for test data.</summary>
internal static class NpzWriter
{
    public static byte[] Npy(string descr, long[] shape, byte[] data, bool fortran = false)
    {
        var dims = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        var header = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {dims}, }}";
        var padded = header.PadRight(((header.Length + 11 + 63) / 64 * 64) - 11) + "\n";
        using var stream = new MemoryStream();
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)padded.Length));
        stream.Write(Encoding.Latin1.GetBytes(padded));
        stream.Write(data);
        return stream.ToArray();
    }

    public static byte[] Floats(long[] shape, float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return Npy("<f4", shape, bytes);
    }

    public static byte[] Longs(long[] values)
    {
        var bytes = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return Npy("<i8", [values.Length], bytes);
    }

    public static void Write(string path, params (string Name, byte[] Bytes)[] members)
    {
        using var file = File.Create(path);
        using var zip = new ZipArchive(file, ZipArchiveMode.Create);
        foreach (var (name, bytes) in members)
        {
            // A fixed timestamp: equal arrays give byte-identical archives (the sample's trainer commits its files).
            var entry = zip.CreateEntry(name + ".npy", CompressionLevel.SmallestSize);
            entry.LastWriteTime = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
            using var stream = entry.Open();
            stream.Write(bytes);
        }
    }
}
