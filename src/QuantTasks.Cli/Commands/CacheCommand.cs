using System.CommandLine;
using System.Globalization;
using QuantTasks.Caching;
using Spectre.Console;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// <c>dotnet quant cache list|clear|push|pull|stats [--cache-dir DIR] [--cache-url URL]</c>: the content-hash cache
/// that builds share, on this machine and on a remote server.
/// </summary>
internal static class CacheCommand
{
    public static Command Create(CommandConsole console)
    {
        var command = new Command("cache", "The content-hash cache of compressed models that builds share.");
        command.Add(List(console));
        command.Add(Clear(console));
        command.Add(Push(console));
        command.Add(Pull(console));
        command.Add(Stats(console));
        return command;
    }

    private static Option<string?> CacheDirectory() =>
        new("--cache-dir") { Description = $"The cache folder. Default: ${ContentCache.DirectoryVariable}, else a per-user folder." };

    private static Command List(CommandConsole console)
    {
        var folder = CacheDirectory();
        var json = new Option<bool>("--json") { Description = "Write {\"root\", \"entries\": [{\"key\", \"model\", \"created\", \"bytes\", \"valid\"}]} to standard output." };
        var command = new Command("list", "Every cached result: content hash, model, when, size, and whether its checksums hold.") { folder, json };
        command.SetAction(parse =>
        {
            var cache = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            var entries = cache.List();
            if (parse.GetValue(json))
            {
                console.WriteJson(new { root = cache.Root, entries });
                return 0;
            }

            if (entries.Count == 0)
            {
                console.Human.WriteLine($"The cache at {cache.Root} is empty.");
                return 0;
            }

            var table = new Table().Border(TableBorder.Rounded).AddColumn("Key").AddColumn("Model").AddColumn("Created (UTC)")
                .AddColumn(new TableColumn("Bytes").RightAligned()).AddColumn("Valid");
            foreach (var e in entries)
            {
                table.AddRow(
                    e.Key[..16],
                    Markup.Escape(e.Model),
                    e.Created.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
                    e.Bytes.ToString("N0", CultureInfo.InvariantCulture),
                    e.Valid ? "yes" : "[red]no[/]");
            }

            console.Human.Write(table);
            console.Human.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{entries.Count} entries, {entries.Sum(e => e.Bytes):N0} bytes, in {cache.Root}"));
            return 0;
        });
        return command;
    }

    private static Command Clear(CommandConsole console)
    {
        var folder = CacheDirectory();
        var command = new Command("clear", "Remove every cached result; the next build compresses its models again.") { folder };
        command.SetAction(parse =>
        {
            var cache = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            var removed = cache.Clear();
            console.Human.WriteLine($"Removed {removed} entries from {cache.Root}.");
            return 0;
        });
        return command;
    }

    private static Command Push(CommandConsole console)
    {
        var folder = CacheDirectory();
        var remote = RemoteCacheOptionSet.Create();
        var command = new Command("push", "Upload every local entry the remote cache does not hold yet (HEAD, then PUT).") { folder };
        remote.AddTo(command);
        command.SetAction(parse =>
        {
            var local = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            using var server = RequireRemote(remote, parse);
            int uploaded = 0, present = 0, skipped = 0;
            foreach (var entry in local.List().Where(e => e.Valid))
            {
                var held = server.Contains(entry.Key, console.Note, console.Cancellation);
                if (held is null)
                {
                    skipped++;
                    continue;
                }

                if (held.Value)
                {
                    present++;
                    continue;
                }

                if (local.TryGet(entry.Key, console.Note, console.Cancellation) is { } result)
                {
                    var before = server.Statistics.Uploads;
                    server.Put(entry.Key, result, console.Note, console.Cancellation);
                    uploaded += server.Statistics.Uploads - before;
                }
            }

            RemoteCacheLedger.Add(local.Root, server.Location, server.Statistics);
            console.Human.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{uploaded} entries uploaded to {server.Location} ({server.Statistics.BytesUploaded:N0} bytes), {present} already there{(skipped > 0 ? $", {skipped} not sent (the server could not be asked)" : "")}."));
            return 0;
        });
        return command;
    }

    private static Command Pull(CommandConsole console)
    {
        var folder = CacheDirectory();
        var remote = RemoteCacheOptionSet.Create();
        var command = new Command("pull", "Download every entry the remote cache lists that this machine lacks, each verified before it is kept.") { folder };
        remote.AddTo(command);
        command.SetAction(parse =>
        {
            var local = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            using var server = RequireRemote(remote, parse);
            var listed = server.List(console.Note, console.Cancellation);
            if (listed is null)
            {
                console.Human.WriteLine($"The server at {server.Location} does not list its entries (neither WebDAV PROPFIND nor a JSON index); builds still read it entry by entry.");
                return 0;
            }

            var have = local.List().Where(e => e.Valid).Select(e => e.Key).ToHashSet(StringComparer.Ordinal);
            var pulled = 0;
            foreach (var entry in listed.Where(e => !have.Contains(e.Key)))
            {
                if (server.TryGet(entry.Key, console.Note, console.Cancellation) is { } result)
                {
                    local.Put(entry.Key, result, console.Note, console.Cancellation);
                    pulled++;
                }
            }

            RemoteCacheLedger.Add(local.Root, server.Location, server.Statistics);
            console.Human.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{pulled} entries downloaded from {server.Location} ({server.Statistics.BytesDownloaded:N0} bytes), {listed.Count - pulled} already here or refused."));
            return 0;
        });
        return command;
    }

    private static Command Stats(CommandConsole console)
    {
        var folder = CacheDirectory();
        var remote = RemoteCacheOptionSet.Create();
        var json = new Option<bool>("--json") { Description = "Write {\"local\", \"remote\", \"history\"} to standard output." };
        var command = new Command("stats", "Entries and bytes here and on the remote cache, and this machine's remote hits, misses and hit rate.") { folder, json };
        remote.AddTo(command);
        command.SetAction(parse =>
        {
            var local = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            var entries = local.List();
            using var server = remote.Open(parse);
            var listed = server?.List(console.Note, console.Cancellation);
            var history = RemoteCacheLedger.Read(local.Root);
            if (parse.GetValue(json))
            {
                console.WriteJson(new
                {
                    local = new { root = local.Root, entries = entries.Count, bytes = entries.Sum(e => e.Bytes) },
                    remote = server is null ? null : new { url = server.Location, listed = listed is not null, entries = listed?.Count, bytes = listed?.Sum(e => e.Bytes ?? 0) },
                    history = history.Select(h => new { url = h.Url, h.Lookups, h.Hits, h.Misses, h.Rejected, h.Errors, h.Uploads, bytes_downloaded = h.BytesDownloaded, bytes_uploaded = h.BytesUploaded, hit_rate = h.HitRate }),
                });
                return 0;
            }

            console.Human.WriteLine(string.Create(CultureInfo.InvariantCulture, $"local  {local.Root}: {entries.Count} entries, {entries.Sum(e => e.Bytes):N0} bytes"));
            if (server is not null)
            {
                console.Human.WriteLine(listed is null
                    ? $"remote {server.Location}: the server does not list its entries"
                    : string.Create(CultureInfo.InvariantCulture, $"remote {server.Location}: {listed.Count} entries, {listed.Sum(e => e.Bytes ?? 0):N0} bytes"));
            }

            foreach (var h in history)
            {
                console.Human.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"history {h.Url}: {h.Lookups} lookups, {h.Hits} hits, {h.Misses} misses, {h.Rejected} rejected, {h.Errors} errors, hit rate {(h.HitRate is { } r ? r.ToString("P0", CultureInfo.InvariantCulture) : "-")}; {h.Uploads} uploads, {h.BytesDownloaded:N0} B down, {h.BytesUploaded:N0} B up"));
            }

            return 0;
        });
        return command;
    }

    private static HttpCache RequireRemote(RemoteCacheOptionSet remote, ParseResult parse) =>
        remote.Open(parse) ?? throw new QuantTasks.Diagnostics.QuantException(QuantTasks.Diagnostics.ErrorCode.Usage,
            $"No remote cache: give --cache-url or set ${HttpCache.UrlVariable}.");
}
