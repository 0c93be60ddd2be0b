using System.Globalization;
using System.IO.Compression;
using System.Text;

namespace DigitsApp;

/// <summary>Reads the sample's .npz of digits: 'input' (float32, N x 1 x 28 x 28) and 'label' (int64).</summary>
internal static class DigitSamples
{
    public static (float[] Images, long[] Labels) Load(string path)
    {
        using var archive = ZipFile.OpenRead(path);
        var images = Read(archive, "input.npy", "<f4");
        var labels = Read(archive, "label.npy", "<i8");
        var floats = new float[images.Length / 4];
        Buffer.BlockCopy(images, 0, floats, 0, images.Length);
        var longs = new long[labels.Length / 8];
        Buffer.BlockCopy(labels, 0, longs, 0, labels.Length);
        return (floats, longs);
    }

    private static byte[] Read(ZipArchive archive, string name, string type)
    {
        var entry = archive.GetEntry(name) ?? throw new InvalidDataException($"{name} is not in the archive.");
        using var stream = new MemoryStream();
        using (var source = entry.Open())
        {
            source.CopyTo(stream);
        }

        var bytes = stream.ToArray();

        // NumPy format 1.0: magic, version, a 2-byte header length, a Python-dict header, then the data.
        var headerLength = BitConverter.ToUInt16(bytes, 8);
        var header = Encoding.Latin1.GetString(bytes, 10, headerLength);
        if (!header.Contains(type, StringComparison.Ordinal) || header.Contains("'fortran_order': True", StringComparison.Ordinal))
        {
            throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture, $"{name}: expected {type} in C order, found {header.Trim()}"));
        }

        return bytes[(10 + headerLength)..];
    }
}
