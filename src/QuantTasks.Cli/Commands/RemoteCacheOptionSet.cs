using System.CommandLine;
using System.Globalization;
using QuantTasks.Caching;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// The remote cache's command-line options, shared by <c>quantize</c> and <c>cache push|pull|stats</c>. There is
/// deliberately no option for the token: it comes from <c>QUANTTASKS_CACHE_TOKEN</c> only, so it is never on a
/// command line (where <c>ps</c> and build logs would show it).
/// </summary>
internal sealed class RemoteCacheOptionSet
{
    private readonly Option<string?> _url = new("--cache-url")
    {
        Description = $"A remote cache: an HTTP server that takes GET/HEAD/PUT (nginx with WebDAV, bazel-remote, an object store). Default: ${HttpCache.UrlVariable}. The token, if any, only from ${HttpCache.TokenVariable}.",
    };

    private readonly Option<bool> _readOnly = new("--cache-read-only")
    {
        Description = $"Read from the remote cache but upload nothing (pull-request builds). Also ${HttpCache.ReadOnlyVariable}=1.",
    };

    private readonly Option<double?> _timeout = new("--cache-timeout")
    {
        Description = "Seconds one request to the remote cache may take before it counts as down for the rest of the run. Default: 30.",
    };

    public static RemoteCacheOptionSet Create() => new();

    public void AddTo(Command command)
    {
        command.Add(_url);
        command.Add(_readOnly);
        command.Add(_timeout);
    }

    /// <summary>The remote cache the options and environment name, or null when none is set.</summary>
    public HttpCache? Open(ParseResult parse)
    {
        var options = RemoteCacheOptions.From(parse.GetValue(_url), parse.GetValue(_readOnly), parse.GetValue(_timeout));
        return options is null ? null : new HttpCache(options);
    }

    /// <summary>Adds the run's counts to the machine's ledger and says in one line what the remote did.</summary>
    public static void Record(CommandConsole console, ContentCache local, HttpCache server)
    {
        var s = server.Statistics;
        RemoteCacheLedger.Add(local.Root, server.Location, s);
        console.Note(string.Create(CultureInfo.InvariantCulture,
            $"remote cache {server.Location}: {s.Hits} hits, {s.Misses} misses, {s.Rejected} rejected, {s.Uploads} uploaded ({s.BytesDownloaded:N0} B down, {s.BytesUploaded:N0} B up){(server.Writes ? "" : ", read-only")}"));
    }
}
