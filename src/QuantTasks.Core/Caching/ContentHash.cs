using System.Security.Cryptography;
using System.Text;
using QuantTasks.Diagnostics;

namespace QuantTasks.Caching;

/// <summary>
/// The SHA-256 of everything a result depends on: the tool version, the model file and its external data, the
/// normalized policy, and the data files. Equal hashes mean an equal blob, so the hash names cache entries and
/// is stamped into the blob and the generated code.
/// </summary>
internal sealed class ContentHash
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    /// <summary>Adds a labelled text (the label keeps "ab"+"c" and "a"+"bc" apart).</summary>
    public ContentHash Add(string label, string text) => Add(label, Encoding.UTF8.GetBytes(text));

    /// <summary>Adds labelled bytes.</summary>
    public ContentHash Add(string label, ReadOnlySpan<byte> bytes)
    {
        AddPrefix(label, bytes.Length);
        _hash.AppendData(bytes);
        return this;
    }

    /// <summary>
    /// Adds a file's content, or a marker that it is absent. The file is streamed (its digest equals that of
    /// <see cref="Add(string, ReadOnlySpan{byte})"/> over its bytes), so a large model costs no memory here,
    /// and only a regular file is read.
    /// </summary>
    public ContentHash AddFile(string label, string? path)
    {
        if (path is null || !File.Exists(path))
        {
            return Add(label, "<absent>");
        }

        using var stream = InputFile.OpenRead(path, "input file");
        var length = stream.Length;
        AddPrefix(label, length);
        var buffer = new byte[Math.Min(length, 1 << 20)];
        for (var remaining = length; remaining > 0;)
        {
            var n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, remaining));
            if (n == 0)
            {
                throw new QuantException(ErrorCode.FileAccess, $"The file '{path}' became shorter while it was hashed.", new SourceLocation(path));
            }

            _hash.AppendData(buffer, 0, n);
            remaining -= n;
        }

        return this;
    }

    // The label, NUL, then the content's length: what keeps "ab"+"c" and "a"+"bc" apart.
    private void AddPrefix(string label, long length)
    {
        Span<byte> prefix = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(prefix, length);
        _hash.AppendData(Encoding.UTF8.GetBytes(label + "\0"));
        _hash.AppendData(prefix);
    }

    /// <summary>The 32-byte digest.</summary>
    public byte[] Finish() => _hash.GetHashAndReset();
}
