using System.Buffers.Binary;
using System.IO.Hashing;
using FsCheck.Xunit;
using QuantTasks.Tests;

namespace QuantTasks.Runtime.Tests.Format;

/// <summary>
/// A reader given a damaged blob throws <see cref="QuantBlobException"/>: never wrong weights, never another
/// exception, never a crash.
/// </summary>
public sealed class CorruptionTests : IDisposable
{
    private readonly TempFolder _folder = new();
    private readonly byte[] _blob;

    public CorruptionTests()
    {
        _blob = TinyModels.TwoLayerBlob(_folder);
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void The_valid_blob_decodes()
    {
        var blob = QuantBlob.Read(_blob);

        Assert.Equal(["w1", "w2"], blob.Tensors.Select(t => t.Name));
        Assert.NotEmpty(blob.DecodeOnnxModel());
        Assert.InRange(_blob.Length, 200, 2000);
    }

    [Fact]
    public void Every_single_byte_change_is_rejected()
    {
        var copy = (byte[])_blob.Clone();
        var accepted = new List<string>();
        for (var position = 0; position < copy.Length; position++)
        {
            var original = copy[position];
            for (var value = 0; value < 256; value++)
            {
                if (value == original)
                {
                    continue;
                }

                copy[position] = (byte)value;
                if (!Rejects(copy))
                {
                    accepted.Add($"byte {position} = {value}");
                }
            }

            copy[position] = original;
        }

        Assert.Empty(accepted);
    }

    [Fact]
    public void Every_truncation_is_rejected_from_arrays_and_streams()
    {
        for (var length = 0; length < _blob.Length; length++)
        {
            var cut = _blob.AsSpan(0, length).ToArray();
            Assert.Throws<QuantBlobException>(() => QuantBlob.Read(cut));
            Assert.Throws<QuantBlobException>(() => QuantBlob.Read(new MemoryStream(cut)));
            Assert.Throws<QuantBlobException>(() => QuantBlob.Read(new NonSeekableStream(cut)));
        }
    }

    [Fact]
    public void A_future_version_is_rejected_with_a_reason_that_says_so()
    {
        var bumped = (byte[])_blob.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(bumped.AsSpan(8), 2);
        FixHeaderCrc(bumped);

        var error = Assert.Throws<QuantBlobException>(() => QuantBlob.Read(bumped));

        Assert.Contains("format version 2, newer than this QuantTasks.Runtime reads (1)", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_declared_length_beyond_the_stream_is_refused_before_allocating_it()
    {
        var forged = (byte[])_blob.Clone();
        BinaryPrimitives.WriteInt64LittleEndian(forged.AsSpan(16), int.MaxValue - (2 * 1024 * 1024));
        FixHeaderCrc(forged);

        var before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Throws<QuantBlobException>(() => QuantBlob.Read(new MemoryStream(forged)));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(allocated < 1024 * 1024, $"{allocated} bytes allocated");
    }

    [Property(MaxTest = 2000)]
    public bool Random_bytes_are_rejected_never_a_crash(byte[] bytes, bool withMagic)
    {
        var data = bytes ?? [];
        if (withMagic)
        {
            // Past the magic and the version, so that the deeper checks are exercised too.
            data = _blob.AsSpan(0, 16).ToArray().Concat(data).ToArray();
        }

        return Rejects(data);
    }

    [Fact]
    public void Random_tails_after_a_valid_header_are_rejected()
    {
        var random = new Random(11);
        for (var trial = 0; trial < 2000; trial++)
        {
            var data = (byte[])_blob.Clone();
            var start = random.Next(64, data.Length);
            for (var i = start; i < data.Length; i++)
            {
                data[i] = (byte)random.Next(256);
            }

            Assert.True(data.AsSpan().SequenceEqual(_blob) || Rejects(data));
        }
    }

    private static bool Rejects(byte[] data)
    {
        try
        {
            QuantBlob.Read(data).DecodeOnnxModel();
            return false;
        }
        catch (QuantBlobException)
        {
            return true;
        }
    }

    private static void FixHeaderCrc(byte[] blob)
    {
        var count = BinaryPrimitives.ReadInt32LittleEndian(blob.AsSpan(12));
        var crc = new Crc32();
        crc.Append(blob.AsSpan(0, 56));
        crc.Append(blob.AsSpan(64, count * 32));
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(56), crc.GetCurrentHashAsUInt32());
    }

    private sealed class NonSeekableStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();
    }
}
