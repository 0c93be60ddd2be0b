using System.Security.Cryptography;
using System.Text;

namespace QuantTasks.Caching;

/// <summary>
/// The SHA-256 of everything a result depends on: the tool version, the model file and its external data, the
/// normalized policy, and the data files. Equal hashes mean an equal blob, so the hash names cache entries and
/// is stamped into the blob and the generated code.
/// </summary>
public sealed class ContentHash
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    /// <summary>Adds a labelled text (the label keeps "ab"+"c" and "a"+"bc" apart).</summary>
    public ContentHash Add(string label, string text) => Add(label, Encoding.UTF8.GetBytes(text));

    /// <summary>Adds labelled bytes.</summary>
    public ContentHash Add(string label, ReadOnlySpan<byte> bytes)
    {
        Span<byte> length = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(length, bytes.Length);
        _hash.AppendData(Encoding.UTF8.GetBytes(label + "\0"));
        _hash.AppendData(length);
        _hash.AppendData(bytes);
        return this;
    }

    /// <summary>Adds a file's content, or a marker that it is absent.</summary>
    public ContentHash AddFile(string label, string? path) =>
        path is not null && File.Exists(path) ? Add(label, File.ReadAllBytes(path)) : Add(label, "<absent>");

    /// <summary>The 32-byte digest.</summary>
    public byte[] Finish() => _hash.GetHashAndReset();
}
