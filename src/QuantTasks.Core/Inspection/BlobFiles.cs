using QuantTasks.Diagnostics;
using QuantTasks.Runtime;

namespace QuantTasks.Inspection;

/// <summary>Telling blobs from ONNX files, and reading blobs with errors in the command line's terms.</summary>
internal static class BlobFiles
{
    /// <summary>Whether the file starts with the blob magic.</summary>
    public static bool IsBlob(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        using var stream = InputFile.OpenRead(path, "input file");
        Span<byte> magic = stackalloc byte[6];
        return stream.Read(magic) == 6 && magic.SequenceEqual("QTBLOB"u8);
    }

    /// <summary>Reads and verifies a blob file.</summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.FileNotFound"/> or <see cref="ErrorCode.BlobInvalid"/>, with the reason.</exception>
    public static QuantBlob Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new QuantException(ErrorCode.FileNotFound, $"Blob '{path}' does not exist.", new SourceLocation(path));
        }

        try
        {
            // The whole file, not the length its header declares: bytes appended to a blob make it invalid,
            // exactly as QuantBlob.Read(byte[]) in the app would find.
            return QuantBlob.Read(InputFile.ReadAllBytes(path, "blob", tooLarge: ErrorCode.BlobInvalid));
        }
        catch (QuantBlobException e)
        {
            throw new QuantException(ErrorCode.BlobInvalid, $"'{path}' is not a usable QuantTasks blob: {e.Message}", new SourceLocation(path), e);
        }
    }

    /// <summary>The blob's model with decoded float weights, as ONNX bytes.</summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.BlobInvalid"/> when a coded stream is corrupt.</exception>
    public static byte[] Decode(QuantBlob blob, string path)
    {
        ArgumentNullException.ThrowIfNull(blob);
        byte[] model;
        try
        {
            model = blob.DecodeOnnxModel();
        }
        catch (QuantBlobException e)
        {
            throw new QuantException(ErrorCode.BlobInvalid, $"'{path}' is not a usable QuantTasks blob: {e.Message}", new SourceLocation(path), e);
        }

        // Checksums prove the bytes are the writer's, not that the writer was QuantTasks: a crafted blob with
        // valid checksums can hold any graph. Whatever is handed on must be a model ONNX Runtime loads.
        try
        {
            Evaluation.ModelEvaluator.Check(model, null, null, path);
        }
        catch (QuantException e) when (e.Code == ErrorCode.OnnxInvalidModel)
        {
            throw new QuantException(ErrorCode.BlobInvalid, $"'{path}' is not a usable QuantTasks blob: its model does not load in ONNX Runtime ({e.Message})", new SourceLocation(path), e);
        }

        return model;
    }
}
