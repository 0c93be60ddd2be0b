using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using QuantTasks.Diagnostics;

namespace QuantTasks.Data;

/// <summary>
/// Reads NumPy's <c>.npy</c> format (versions 1 to 3): a magic string, a header that is a Python dict literal with
/// <c>descr</c>, <c>fortran_order</c> and <c>shape</c>, then the elements. Only what the contract accepts is read:
/// little-endian float32, int32 and int64 in C order.
/// </summary>
internal static partial class NpyReader
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Reads one array from <paramref name="stream"/>; <paramref name="where"/> names it in errors.</summary>
    /// <param name="stream">The array's bytes.</param>
    /// <param name="name">The array's name.</param>
    /// <param name="where">Names the array in errors.</param>
    /// <param name="available">How many bytes the stream holds in all (a file's or archive member's size):
    /// a header that declares more data than that is refused before anything is allocated for it.</param>
    public static NpyArray Read(Stream stream, string name, string where, long available = long.MaxValue)
    {
        Span<byte> prefix = stackalloc byte[10];
        if (ReadFully(stream, prefix) < 8 || !prefix[..6].SequenceEqual(Magic))
        {
            throw new QuantException(ErrorCode.DataUnreadable,
                $"{where} is not a NumPy .npy array (its magic bytes are wrong). Save it with numpy.save or numpy.savez.");
        }

        var major = prefix[6];
        int headerLength;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(prefix[8..]);
        }
        else if (major is 2 or 3)
        {
            Span<byte> rest = stackalloc byte[2];
            if (ReadFully(stream, rest) < 2)
            {
                throw Truncated(where, "its header");
            }

            var length = BinaryPrimitives.ReadUInt32LittleEndian([prefix[8], prefix[9], rest[0], rest[1]]);
            if (length > 1 << 20)
            {
                throw new QuantException(ErrorCode.DataUnreadable, $"{where} declares a {length}-byte header; the file is damaged.");
            }

            headerLength = (int)length;
        }
        else
        {
            throw new QuantException(ErrorCode.DataUnreadable,
                $"{where} is .npy version {major}, which QuantTasks does not read (versions 1 to 3 are supported).");
        }

        var headerBytes = new byte[headerLength];
        if (ReadFully(stream, headerBytes) < headerLength)
        {
            throw Truncated(where, "its header");
        }

        var header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(headerBytes);
        var (dtype, elementSize, shape) = ParseHeader(header, where);
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim != 0 && count > long.MaxValue / dim / elementSize)
            {
                throw new QuantException(ErrorCode.DataUnreadable,
                    FormattableString.Invariant($"{where} declares shape ({string.Join(", ", shape)}), more elements than any file can hold; the file is damaged."));
            }

            count *= dim;
        }

        var dataStart = (major == 1 ? 10 : 12) + headerLength;
        if (count * elementSize > available - dataStart)
        {
            throw new QuantException(ErrorCode.DataTruncated,
                FormattableString.Invariant($"{where} has shape ({string.Join(", ", shape)}) and needs {count * elementSize} bytes of data but stores only {Math.Max(0, available - dataStart)}. The file is truncated; save it again."));
        }

        if (count * elementSize > Array.MaxLength)
        {
            throw new QuantException(ErrorCode.DataUnreadable,
                $"{where} holds {count} elements; arrays over {Array.MaxLength} bytes are not supported. Split the data into smaller files.");
        }

        var bytes = new byte[count * elementSize];
        var read = ReadFully(stream, bytes);
        if (read < bytes.Length)
        {
            throw new QuantException(ErrorCode.DataTruncated,
                FormattableString.Invariant($"{where} has shape ({string.Join(", ", shape)}) and needs {bytes.Length} bytes of data but stores only {read}. The file is truncated; save it again."));
        }

        return dtype switch
        {
            NpyDType.Float32 => new NpyArray(name, dtype, shape, Floats(bytes), null),
            _ => new NpyArray(name, dtype, shape, null, Integers(bytes, dtype)),
        };
    }

    private static (NpyDType DType, int ElementSize, long[] Shape) ParseHeader(string header, string where)
    {
        var descr = DescrPattern().Match(header);
        var fortran = FortranPattern().Match(header);
        var shape = ShapePattern().Match(header);
        if (!descr.Success || !fortran.Success || !shape.Success)
        {
            throw new QuantException(ErrorCode.DataUnreadable,
                $"{where} has a header QuantTasks cannot read: '{header.Trim()}'. Save it with numpy.save or numpy.savez.");
        }

        if (fortran.Groups[1].Value == "True")
        {
            throw new QuantException(ErrorCode.DataUnsupportedLayout,
                $"{where} is stored in Fortran order; QuantTasks reads C order. Save numpy.ascontiguousarray(array) instead.");
        }

        var code = descr.Groups[1].Value;
        (NpyDType, int)? type = code switch
        {
            "<f4" => (NpyDType.Float32, 4),
            "<i4" => (NpyDType.Int32, 4),
            "<i8" => (NpyDType.Int64, 8),
            _ => null,
        };
        if (type is null)
        {
            var kind = code.Length > 0 && code[0] == '>'
                ? (ErrorCode.DataUnsupportedLayout, "big-endian")
                : (ErrorCode.DataWrongType, "of dtype");
            throw new QuantException(kind.Item1,
                $"{where} is {kind.Item2} '{code}'; QuantTasks reads float32 ('<f4') inputs and int32 ('<i4') or int64 ('<i8') labels. Convert it with array.astype(numpy.float32) or astype(numpy.int64).");
        }

        var dims = new List<long>();
        foreach (var part in shape.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!long.TryParse(part.TrimEnd('L'), NumberStyles.None, CultureInfo.InvariantCulture, out var dim))
            {
                throw new QuantException(ErrorCode.DataUnreadable, $"{where} has a shape QuantTasks cannot read: '{shape.Groups[1].Value}'.");
            }

            dims.Add(dim);
        }

        return (type.Value.Item1, type.Value.Item2, dims.ToArray());
    }

    private static float[] Floats(byte[] bytes)
    {
        var values = new float[bytes.Length / 4];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4));
        }

        return values;
    }

    private static long[] Integers(byte[] bytes, NpyDType dtype)
    {
        var size = dtype == NpyDType.Int32 ? 4 : 8;
        var values = new long[bytes.Length / size];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = size == 4
                ? BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(i * 4))
                : BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(i * 8));
        }

        return values;
    }

    private static int ReadFully(Stream stream, Span<byte> buffer)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = stream.Read(buffer[total..]);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }

    private static QuantException Truncated(string where, string part) =>
        new(ErrorCode.DataTruncated, $"{where} ends inside {part}. The file is truncated; save it again.");

    [GeneratedRegex(@"['""]descr['""]\s*:\s*['""]([^'""]*)['""]")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"['""]fortran_order['""]\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"['""]shape['""]\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
