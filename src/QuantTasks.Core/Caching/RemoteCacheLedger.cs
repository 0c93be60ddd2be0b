using System.Text.Json;

namespace QuantTasks.Caching;

/// <summary>One remote's running totals on this machine, as <c>dotnet quant cache stats</c> shows them.</summary>
internal sealed record RemoteCacheTotals(string Url, int Lookups, int Hits, int Misses, int Rejected, int Errors, int Uploads, long BytesDownloaded, long BytesUploaded)
{
    /// <summary>Hits per lookup, or null before the first lookup.</summary>
    public double? HitRate => Lookups == 0 ? null : (double)Hits / Lookups;
}

/// <summary>
/// What the remote caches did for the builds of this machine, summed per server URL, in <c>remote-stats.json</c>
/// beside the local cache's entries. A server cannot say how often this machine found what it wanted, so the
/// machine keeps count. Written under a lock file; a ledger that cannot be read or written is started again, never an error.
/// </summary>
internal static class RemoteCacheLedger
{
    private const string FileName = "remote-stats.json";
    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Every remote's totals recorded under <paramref name="localRoot"/>.</summary>
    public static IReadOnlyList<RemoteCacheTotals> Read(string localRoot)
    {
        try
        {
            var path = Path.Combine(localRoot, FileName);
            return File.Exists(path) ? JsonSerializer.Deserialize<RemoteCacheTotals[]>(File.ReadAllBytes(path), s_json) ?? [] : [];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            return [];
        }
    }

    /// <summary>Adds one run's counts for <paramref name="url"/>.</summary>
    public static void Add(string localRoot, string url, RemoteCacheStatistics run)
    {
        ArgumentNullException.ThrowIfNull(run);
        try
        {
            Directory.CreateDirectory(localRoot);
            using var gate = Lock(Path.Combine(localRoot, FileName + ".lock"));
            var totals = Read(localRoot).ToDictionary(t => t.Url, StringComparer.Ordinal);
            var before = totals.GetValueOrDefault(url) ?? new RemoteCacheTotals(url, 0, 0, 0, 0, 0, 0, 0, 0);
            totals[url] = before with
            {
                Lookups = before.Lookups + run.Lookups,
                Hits = before.Hits + run.Hits,
                Misses = before.Misses + run.Misses,
                Rejected = before.Rejected + run.Rejected,
                Errors = before.Errors + run.Errors,
                Uploads = before.Uploads + run.Uploads,
                BytesDownloaded = before.BytesDownloaded + run.BytesDownloaded,
                BytesUploaded = before.BytesUploaded + run.BytesUploaded,
            };
            var path = Path.Combine(localRoot, FileName);
            var temp = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(totals.Values.OrderBy(t => t.Url, StringComparer.Ordinal).ToArray(), s_json));
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Statistics are a convenience: a cache folder that cannot be written loses them, nothing else.
        }
    }

    private static FileStream? Lock(string path)
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            }
            catch (IOException)
            {
                Thread.Sleep(20);
            }
        }

        return null;
    }
}
