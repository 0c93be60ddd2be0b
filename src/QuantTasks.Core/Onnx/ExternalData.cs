using System.Globalization;
using System.Security.Cryptography;
using Google.Protobuf;
using QuantTasks.Diagnostics;
using QuantTasks.Onnx.Proto;

namespace QuantTasks.Onnx;

/// <summary>
/// ONNX external data: a tensor whose bytes live in a separate file (how models over 2 GB are stored). The
/// tensor's <c>external_data</c> entries name the file (<c>location</c>, relative to the model's folder), and
/// optionally <c>offset</c>, <c>length</c> and a SHA-1 <c>checksum</c>.
/// </summary>
internal static class ExternalData
{
    /// <summary>Reads the tensor's bytes into <c>raw_data</c> and returns the location it came from.</summary>
    public static string Load(TensorProto tensor, string modelFolder, string modelDisplayPath)
    {
        string? location = null, checksum = null;
        long offset = 0, length = -1;
        foreach (var entry in tensor.ExternalData)
        {
            switch (entry.Key)
            {
                case "location":
                    location = entry.Value;
                    break;
                case "offset":
                    offset = ParseNumber(entry.Value, "offset", tensor, modelDisplayPath);
                    break;
                case "length":
                    length = ParseNumber(entry.Value, "length", tensor, modelDisplayPath);
                    break;
                case "checksum":
                    checksum = entry.Value;
                    break;
                default:
                    break; // Other keys are hints for other tools (basepath is never written by the exporters).
            }
        }

        if (string.IsNullOrEmpty(location))
        {
            throw new QuantException(ErrorCode.OnnxExternalDataMissing,
                $"Tensor '{tensor.Name}' is marked as external data but names no location. Export the model again.",
                new SourceLocation(modelDisplayPath));
        }

        var file = ResolveInside(modelFolder, location, modelDisplayPath, tensor.Name);
        if (!File.Exists(file))
        {
            throw new QuantException(ErrorCode.OnnxExternalDataMissing,
                $"Tensor '{tensor.Name}' keeps its data in '{location}', which does not exist beside the model. Copy the external data file next to the .onnx file.",
                new SourceLocation(modelDisplayPath));
        }

        byte[] bytes;
        using (var stream = InputFile.OpenRead(file, $"external data file of tensor '{tensor.Name}'", new SourceLocation(modelDisplayPath)))
        {
            if (length < 0)
            {
                length = stream.Length - offset;
            }

            if (offset < 0 || length < 0 || offset > stream.Length || length > stream.Length - offset)
            {
                throw new QuantException(ErrorCode.OnnxExternalDataMissing,
                    FormattableString.Invariant($"Tensor '{tensor.Name}' needs bytes {offset} to {offset + length} of '{location}', which has only {stream.Length}. The external data file is truncated or belongs to another model."),
                    new SourceLocation(modelDisplayPath));
            }

            if (length > Array.MaxLength)
            {
                throw new QuantException(ErrorCode.OnnxUnsupportedTensor,
                    FormattableString.Invariant($"Tensor '{tensor.Name}' is {length} bytes; one tensor larger than {Array.MaxLength} bytes is not supported."),
                    new SourceLocation(modelDisplayPath));
            }

            bytes = new byte[length];
            stream.Position = offset;
            stream.ReadExactly(bytes);
        }

        if (checksum is not null)
        {
#pragma warning disable CA5350 // The ONNX format defines the checksum as SHA-1; it detects mismatched files, not attacks.
            var actual = Convert.ToHexStringLower(SHA1.HashData(bytes));
#pragma warning restore CA5350
            if (!string.Equals(actual, checksum, StringComparison.OrdinalIgnoreCase))
            {
                throw new QuantException(ErrorCode.OnnxExternalDataMissing,
                    $"Tensor '{tensor.Name}': the data in '{location}' does not match its SHA-1 checksum. The external data file belongs to another version of the model.",
                    new SourceLocation(modelDisplayPath));
            }
        }

        tensor.RawData = ByteString.CopyFrom(bytes);
        tensor.ExternalData.Clear();
        tensor.ClearDataLocation();
        return location;
    }

    /// <summary>Turns an inline tensor into a reference to <paramref name="length"/> bytes at <paramref name="offset"/> of <paramref name="location"/>.</summary>
    public static void MarkExternal(TensorProto tensor, string location, long offset, long length)
    {
        tensor.ClearRawData();
        tensor.ExternalData.Clear();
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(CultureInfo.InvariantCulture) });
        tensor.DataLocation = TensorProto.Types.DataLocation.External;
    }

    /// <summary>
    /// The full path of <paramref name="location"/> inside <paramref name="folder"/>. A location that is absolute or
    /// climbs out of the folder is refused: a model file must not make the tool read or write arbitrary files.
    /// </summary>
    public static string ResolveInside(string folder, string location, string modelDisplayPath, string? tensorName = null)
    {
        var root = Path.GetFullPath(folder);
        if (location.Contains('\0', StringComparison.Ordinal))
        {
            throw new QuantException(ErrorCode.OnnxExternalDataMissing,
                $"{(tensorName is null ? "An external data location" : $"Tensor '{tensorName}'")} names a file with a NUL character in its name; no file has such a name. Export the model again.",
                new SourceLocation(modelDisplayPath));
        }

        var candidate = Path.GetFullPath(Path.Combine(root, location));

        // Compared twice: as written (no absolute path, no climbing out with ..), and with every symbolic link
        // resolved, so that a link inside the folder cannot point the read (or a write) anywhere else.
        if (Path.IsPathRooted(location) || !InputFile.IsInside(root, candidate)
            || !InputFile.IsInside(InputFile.RealPath(root), InputFile.RealPath(candidate)))
        {
            var what = tensorName is null ? "An external data location" : $"Tensor '{tensorName}'";
            throw new QuantException(ErrorCode.OnnxExternalDataOutsideFolder,
                $"{what} points to '{location}', outside the model's folder; refused. External data files must sit in the model's folder or below it.",
                new SourceLocation(modelDisplayPath));
        }

        return candidate;
    }

    private static long ParseNumber(string text, string key, TensorProto tensor, string modelDisplayPath)
    {
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
        {
            throw new QuantException(ErrorCode.OnnxExternalDataMissing,
                $"Tensor '{tensor.Name}' has external data {key} '{text}', which is not a number. Export the model again.",
                new SourceLocation(modelDisplayPath));
        }

        return value;
    }
}
