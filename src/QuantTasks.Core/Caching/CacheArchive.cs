using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace QuantTasks.Caching;

/// <summary>
/// One cache entry as a single file, the unit a remote cache stores under its key (as Bazel's and ccache's HTTP
/// backends store one object per key).
/// </summary>
/// <remarks>
/// Layout, little-endian: the magic <c>QTCACHE\n</c>; a format version (u32); the SHA-256 of the key's UTF-8
/// bytes followed by everything after the hash; then five length-prefixed (u64) fields: key, model name, blob,
/// generated code, report JSON. The key is inside the hash, so an entry copied to another key's address is
/// refused like a damaged one; a reader checks magic, version, lengths, hash and key before using any field.
/// </remarks>
internal static class CacheArchive
{
    private const int FormatVersion = 1;
    private const int HashBytes = 32;
    private static readonly byte[] s_magic = "QTCACHE\n"u8.ToArray();
    private static readonly int s_headerBytes = s_magic.Length + sizeof(uint) + HashBytes;

    /// <summary>The archive of <paramref name="result"/> stored under <paramref name="key"/>.</summary>
    public static byte[] Pack(string key, CachedResult result)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(result);
        byte[][] fields =
        [
            Encoding.UTF8.GetBytes(key),
            Encoding.UTF8.GetBytes(result.Model),
            result.Blob,
            Encoding.UTF8.GetBytes(result.Code),
            Encoding.UTF8.GetBytes(result.Report),
        ];
        var body = new byte[fields.Sum(f => sizeof(ulong) + f.Length)];
        var at = 0;
        foreach (var field in fields)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(body.AsSpan(at), (ulong)field.Length);
            field.CopyTo(body, at + sizeof(ulong));
            at += sizeof(ulong) + field.Length;
        }

        var archive = new byte[s_headerBytes + body.Length];
        s_magic.CopyTo(archive, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(archive.AsSpan(s_magic.Length), FormatVersion);
        Hash(key, body).CopyTo(archive, s_magic.Length + sizeof(uint));
        body.CopyTo(archive, s_headerBytes);
        return archive;
    }

    /// <summary>
    /// The entry in <paramref name="archive"/> when it is whole, untampered and stored under <paramref name="key"/>;
    /// otherwise null, with what is wrong in <paramref name="problem"/>.
    /// </summary>
    public static CachedResult? TryUnpack(string key, ReadOnlySpan<byte> archive, out string problem)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (archive.Length < s_headerBytes || !archive[..s_magic.Length].SequenceEqual(s_magic))
        {
            problem = "it is not a QuantTasks cache entry";
            return null;
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(archive[s_magic.Length..]);
        if (version != FormatVersion)
        {
            problem = $"it has format version {version}, this QuantTasks reads {FormatVersion}";
            return null;
        }

        var body = archive[s_headerBytes..];
        if (!Hash(key, body).AsSpan().SequenceEqual(archive.Slice(s_magic.Length + sizeof(uint), HashBytes)))
        {
            problem = "its SHA-256 does not match its content and key (damaged, truncated or altered)";
            return null;
        }

        var fields = new byte[5][];
        for (var i = 0; i < fields.Length; i++)
        {
            if (body.Length < sizeof(ulong))
            {
                problem = "it is truncated";
                return null;
            }

            var length = BinaryPrimitives.ReadUInt64LittleEndian(body);
            if (length > (ulong)(body.Length - sizeof(ulong)))
            {
                problem = "a field runs past its end";
                return null;
            }

            fields[i] = body.Slice(sizeof(ulong), (int)length).ToArray();
            body = body[(sizeof(ulong) + (int)length)..];
        }

        var storedKey = Encoding.UTF8.GetString(fields[0]);
        if (body.Length != 0 || storedKey != key)
        {
            problem = body.Length != 0 ? "it has bytes after its last field" : "it was stored for another key";
            return null;
        }

        problem = "";
        return new CachedResult(Encoding.UTF8.GetString(fields[1]), fields[2], Encoding.UTF8.GetString(fields[3]), Encoding.UTF8.GetString(fields[4]));
    }

    private static byte[] Hash(string key, ReadOnlySpan<byte> body)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(Encoding.UTF8.GetBytes(key));
        sha.AppendData(body);
        return sha.GetHashAndReset();
    }
}
