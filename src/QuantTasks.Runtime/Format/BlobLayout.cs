using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO.Hashing;
using System.Linq;

namespace QuantTasks.Runtime.Format;

/// <summary>A section as the section table describes it.</summary>
internal readonly struct SectionRecord
{
    public SectionRecord(SectionKind kind, long offset, long length, ulong checksum)
    {
        Kind = kind;
        Offset = offset;
        Length = length;
        Checksum = checksum;
    }

    public SectionKind Kind { get; }

    public long Offset { get; }

    public long Length { get; }

    public ulong Checksum { get; }
}

/// <summary>
/// The blob's frame: header, section table and checksums. Writing and verifying live together so that the two
/// cannot disagree; the writer in QuantTasks.Core calls <see cref="Assemble"/>.
/// </summary>
internal static class BlobLayout
{
    private static readonly SectionKind[] RequiredKinds =
        [SectionKind.Metadata, SectionKind.Graph, SectionKind.TensorDirectory, SectionKind.Payload];

    /// <summary>Lays out header, section table and sections back to back, with every checksum filled in.</summary>
    public static byte[] Assemble(ReadOnlySpan<byte> contentHash, IReadOnlyList<(SectionKind Kind, byte[] Bytes)> sections)
    {
        if (contentHash.Length != BlobFormat.ContentHashSize)
        {
            throw new ArgumentException($"The content hash must be {BlobFormat.ContentHashSize} bytes.", nameof(contentHash));
        }

        var tableEnd = BlobFormat.HeaderSize + (sections.Count * BlobFormat.SectionEntrySize);
        var total = tableEnd + sections.Sum(s => (long)s.Bytes.Length);
        var blob = new byte[total];
        var span = blob.AsSpan();
        BlobFormat.Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt16LittleEndian(span.Slice(8), BlobFormat.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(span.Slice(10), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(span.Slice(12), (uint)sections.Count);
        BinaryPrimitives.WriteInt64LittleEndian(span.Slice(16), total);
        contentHash.CopyTo(span.Slice(24));

        long offset = tableEnd;
        for (var i = 0; i < sections.Count; i++)
        {
            var entry = span.Slice(BlobFormat.HeaderSize + (i * BlobFormat.SectionEntrySize));
            var bytes = sections[i].Bytes;
            BinaryPrimitives.WriteUInt32LittleEndian(entry, (uint)sections[i].Kind);
            BinaryPrimitives.WriteUInt32LittleEndian(entry.Slice(4), 0);
            BinaryPrimitives.WriteInt64LittleEndian(entry.Slice(8), offset);
            BinaryPrimitives.WriteInt64LittleEndian(entry.Slice(16), bytes.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(entry.Slice(24), XxHash64.HashToUInt64(bytes));
            bytes.CopyTo(span.Slice((int)offset));
            offset += bytes.Length;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(span.Slice(BlobFormat.HeaderCrcOffset), HeaderCrc(span, sections.Count));
        return blob;
    }

    /// <summary>The header's fixed part: checks magic, version and declared size; returns the section count and length.</summary>
    public static (int SectionCount, long FileLength) ReadPrefix(ReadOnlySpan<byte> header)
    {
        if (header.Length < BlobFormat.HeaderSize)
        {
            throw new QuantBlobException($"The blob is {header.Length} bytes, shorter than its {BlobFormat.HeaderSize}-byte header; it is truncated or not a QuantTasks blob.");
        }

        if (!header.Slice(0, 8).SequenceEqual(BlobFormat.Magic))
        {
            throw new QuantBlobException("This is not a QuantTasks blob (its first bytes are not \"QTBLOB\\r\\n\").");
        }

        var version = BinaryPrimitives.ReadUInt16LittleEndian(header.Slice(8));
        if (version > BlobFormat.Version)
        {
            throw new QuantBlobException($"The blob has format version {version}, newer than this QuantTasks.Runtime reads ({BlobFormat.Version}). Update the QuantTasks.Runtime package to the version that wrote it.");
        }

        if (version != BlobFormat.Version)
        {
            throw new QuantBlobException($"The blob has format version {version}, which does not exist; the blob is corrupt.");
        }

        var flags = BinaryPrimitives.ReadUInt16LittleEndian(header.Slice(10));
        var count = BinaryPrimitives.ReadUInt32LittleEndian(header.Slice(12));
        var length = BinaryPrimitives.ReadInt64LittleEndian(header.Slice(16));
        if (flags != 0 || count != RequiredKinds.Length)
        {
            throw new QuantBlobException("The blob's header is corrupt (unknown flags or section count).");
        }

        if (length < BlobFormat.HeaderSize || length > BlobFormat.MaxDecodedBytes)
        {
            throw new QuantBlobException($"The blob declares a length of {length} bytes, which is out of range; it is corrupt.");
        }

        return ((int)count, length);
    }

    /// <summary>Checks the whole frame of a blob held in memory and returns its sections, in table order.</summary>
    public static SectionRecord[] Verify(ReadOnlySpan<byte> blob)
    {
        var (count, length) = ReadPrefix(blob);
        var tableEnd = BlobFormat.HeaderSize + (count * BlobFormat.SectionEntrySize);
        if (blob.Length < length)
        {
            throw new QuantBlobException($"The blob is {blob.Length} bytes but declares {length}; it is truncated.");
        }

        if (blob.Length > length)
        {
            throw new QuantBlobException($"The blob is {blob.Length} bytes but declares {length}; bytes were appended or it is corrupt.");
        }

        if (blob.Length < tableEnd)
        {
            throw new QuantBlobException("The blob ends inside its section table; it is truncated.");
        }

        VerifyHeaderCrc(blob, count);

        // Sections tile the file exactly, in the order of the format, so no byte goes unchecked.
        var sections = new SectionRecord[count];
        long expectedOffset = tableEnd;
        for (var i = 0; i < count; i++)
        {
            var entry = blob.Slice(BlobFormat.HeaderSize + (i * BlobFormat.SectionEntrySize));
            var kind = (SectionKind)BinaryPrimitives.ReadUInt32LittleEndian(entry);
            var offset = BinaryPrimitives.ReadInt64LittleEndian(entry.Slice(8));
            var size = BinaryPrimitives.ReadInt64LittleEndian(entry.Slice(16));
            var checksum = BinaryPrimitives.ReadUInt64LittleEndian(entry.Slice(24));
            if (kind != RequiredKinds[i] || BinaryPrimitives.ReadUInt32LittleEndian(entry.Slice(4)) != 0)
            {
                throw new QuantBlobException($"Section {i} of the blob is of kind {(uint)kind}, expected {RequiredKinds[i]}; the blob is corrupt.");
            }

            if (offset != expectedOffset || size < 0 || size > length - offset)
            {
                throw new QuantBlobException($"The blob's {kind} section lies outside the blob; it is corrupt.");
            }

            if (XxHash64.HashToUInt64(blob.Slice((int)offset, (int)size)) != checksum)
            {
                throw new QuantBlobException($"The blob's {kind} section fails its checksum; the blob is corrupt.");
            }

            sections[i] = new SectionRecord(kind, offset, size, checksum);
            expectedOffset = offset + size;
        }

        if (expectedOffset != length)
        {
            throw new QuantBlobException("The blob's sections do not end where the blob does; it is corrupt.");
        }

        return sections;
    }

    /// <summary>Checks the CRC-32 over the header and the section table, and the reserved word.</summary>
    public static void VerifyHeaderCrc(ReadOnlySpan<byte> frame, int sectionCount)
    {
        var storedCrc = BinaryPrimitives.ReadUInt32LittleEndian(frame.Slice(BlobFormat.HeaderCrcOffset));
        if (storedCrc != HeaderCrc(frame, sectionCount) || BinaryPrimitives.ReadUInt32LittleEndian(frame.Slice(60)) != 0)
        {
            throw new QuantBlobException("The blob's header or section table fails its CRC-32; the blob is corrupt.");
        }
    }

    private static uint HeaderCrc(ReadOnlySpan<byte> blob, int sectionCount)
    {
        var crc = new Crc32();
        crc.Append(blob.Slice(0, BlobFormat.HeaderCrcOffset));
        crc.Append(blob.Slice(BlobFormat.HeaderSize, sectionCount * BlobFormat.SectionEntrySize));
        return crc.GetCurrentHashAsUInt32();
    }
}
