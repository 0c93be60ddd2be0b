using QuantTasks.Caching;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Caching;

public sealed class ContentCacheTests : IDisposable
{
    private const string Key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    private static CachedResult Result(byte seed = 1) =>
        new("Digits", Enumerable.Range(0, 1000).Select(i => (byte)(i * seed)).ToArray(), "// code\n", "{\"name\": \"Digits\"}");

    [Fact]
    public void What_is_stored_comes_back_byte_for_byte()
    {
        var cache = new ContentCache(_folder.Path);
        Assert.Null(cache.TryGet(Key));

        cache.Put(Key, Result());
        var back = cache.TryGet(Key);

        Assert.NotNull(back);
        Assert.Equal(Result().Blob, back.Blob);
        Assert.Equal(Result().Code, back.Code);
        Assert.Equal(Result().Report, back.Report);
        var entry = Assert.Single(cache.List());
        Assert.Equal(Key, entry.Key);
        Assert.Equal("Digits", entry.Model);
        Assert.True(entry.Valid);
    }

    [Theory]
    [InlineData("model.qtblob")]
    [InlineData("loader.cs.cached")]
    [InlineData("report.json")]
    [InlineData("manifest.json")]
    public void A_damaged_entry_is_a_miss_and_is_removed(string file)
    {
        var cache = new ContentCache(_folder.Path);
        cache.Put(Key, Result());
        var path = Directory.EnumerateFiles(_folder.Path, file, SearchOption.AllDirectories).Single();
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(path, bytes);
        Assert.False(Assert.Single(cache.List()).Valid);
        var notes = new List<string>();

        Assert.Null(cache.TryGet(Key, notes.Add));

        Assert.Contains(notes, n => n.Contains("damaged", StringComparison.Ordinal));
        Assert.Empty(cache.List());
        cache.Put(Key, Result());
        Assert.NotNull(cache.TryGet(Key));
    }

    [Fact]
    public void A_truncated_file_is_detected()
    {
        var cache = new ContentCache(_folder.Path);
        cache.Put(Key, Result());
        var blob = Directory.EnumerateFiles(_folder.Path, "model.qtblob", SearchOption.AllDirectories).Single();
        File.WriteAllBytes(blob, File.ReadAllBytes(blob)[..500]);

        Assert.Null(cache.TryGet(Key));
    }

    [Fact]
    public void Many_writers_of_one_key_at_once_leave_one_valid_entry_and_no_temporary_folders()
    {
        var cache = new ContentCache(_folder.Path);
        Parallel.For(0, 16, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ => cache.Put(Key, Result()));

        var entry = Assert.Single(cache.List());
        Assert.True(entry.Valid);
        Assert.Empty(Directory.EnumerateDirectories(_folder.Path, "*.tmp", SearchOption.AllDirectories));
        Assert.Equal(Result().Blob, cache.TryGet(Key)!.Blob);
    }

    [Fact]
    public void Readers_during_writes_see_a_whole_entry_or_none()
    {
        var cache = new ContentCache(_folder.Path);
        var seen = 0;
        Parallel.Invoke(
            () =>
            {
                for (var i = 0; i < 20; i++)
                {
                    cache.Put(Key, Result());
                }
            },
            () =>
            {
                for (var i = 0; i < 200; i++)
                {
                    if (cache.TryGet(Key) is { } result)
                    {
                        Assert.Equal(Result().Blob, result.Blob);
                        Interlocked.Increment(ref seen);
                    }
                }
            });

        Assert.NotNull(cache.TryGet(Key));
    }

    [Fact]
    public void Clear_removes_every_entry()
    {
        var cache = new ContentCache(_folder.Path);
        cache.Put(Key, Result());
        cache.Put(Key.Replace('0', 'f'), Result(3));
        Assert.Equal(2, cache.List().Count);

        Assert.Equal(2, cache.Clear());

        Assert.Empty(cache.List());
        Assert.Null(cache.TryGet(Key));
    }

    [Fact]
    public void An_unwritable_cache_is_only_a_note()
    {
        var file = _folder.File("not-a-folder");
        File.WriteAllText(file, "");
        var notes = new List<string>();

        new ContentCache(file).Put(Key, Result(), notes.Add);

        Assert.Single(notes);
    }

    [Fact]
    public void Keys_must_be_lower_case_hex()
    {
        Assert.Throws<ArgumentException>(() => new ContentCache(_folder.Path).TryGet("../../etc"));
    }
}
