using System.IO.Compression;
using System.Text;
using QuantTasks.Tests;

namespace QuantTasks.Build.Tests.EndToEnd;

/// <summary>
/// `dotnet build` of two checkouts against one remote cache behind a real nginx that wants a bearer token, the
/// way a CI fleet shares results: the token reaches the server, and neither the build output nor the binary log
/// ever holds it.
/// </summary>
[Collection(SharedPackageFeed.Name)]
public sealed class RemoteCacheBuildTests
{
    private const string Token = "qt-token-5d1e8a93c7b24f06";

    private readonly PackageFeed _feed;

    public RemoteCacheBuildTests(PackageFeed feed) => _feed = feed;

    [Fact]
    public void A_second_checkout_builds_from_the_remote_and_the_token_appears_in_no_output_or_binary_log()
    {
        using var server = new NginxServer(requiredToken: Token);
        using var first = new ConsumerProject(_feed);
        using var second = new ConsumerProject(_feed);
        first.WritePolicy();
        second.WritePolicy();
        var secret = new Dictionary<string, string> { ["QUANTTASKS_CACHE_TOKEN"] = Token };
        var url = $"-p:QuantCacheUrl={server.Url}";

        var one = first.Build(secret, url, "-bl:" + Path.Combine(first.Folder, "build.binlog"));
        var two = second.Build(secret, url, "-bl:" + Path.Combine(second.Folder, "build.binlog"));

        Assert.True(one.Exit == 0, one.Output);
        Assert.True(two.Exit == 0, two.Output);
        Assert.Single(server.Entries);
        Assert.False(first.Report().GetProperty("cache_hit").GetBoolean());
        Assert.True(first.Report().GetProperty("stages").TryGetProperty("analyze", out _));
        Assert.True(second.Report().GetProperty("cache_hit").GetBoolean());
        Assert.False(second.Report().GetProperty("stages").TryGetProperty("analyze", out _));
        Assert.DoesNotContain("Digits: analyze", two.Output, StringComparison.Ordinal);
        Assert.DoesNotContain(Token, one.Output + two.Output, StringComparison.Ordinal);
        Assert.False(BinaryLogHolds(Path.Combine(first.Folder, "build.binlog"), Token), "the first build's binary log holds the token");
        Assert.False(BinaryLogHolds(Path.Combine(second.Folder, "build.binlog"), Token), "the second build's binary log holds the token");
        Assert.DoesNotContain("401", File.ReadAllText(server.AccessLog), StringComparison.Ordinal);

        // Without the token the server refuses: a warning, the model computed here, the build green.
        using var third = new ConsumerProject(_feed);
        third.WritePolicy();
        var refused = third.Build(url);
        Assert.True(refused.Exit == 0, refused.Output);
        Assert.Matches(@"warning QT1009: Could not read the remote cache at http://127\.0\.0\.1:\d+/: HTTP 401", refused.Output);
        Assert.False(third.Report().GetProperty("cache_hit").GetBoolean());
    }

    /// <summary>A binary log is a gzip stream of records; the token is looked for in the raw and the inflated bytes, as UTF-8 and UTF-16.</summary>
    private static bool BinaryLogHolds(string path, string secret)
    {
        Assert.True(File.Exists(path), path);
        var raw = File.ReadAllBytes(path);
        using var inflated = new MemoryStream();
        using (var gzip = new GZipStream(new MemoryStream(raw), CompressionMode.Decompress))
        {
            gzip.CopyTo(inflated);
        }

        var bytes = inflated.ToArray();
        Assert.True(bytes.Length > raw.Length, "the binary log inflates");
        return new[] { Encoding.UTF8.GetBytes(secret), Encoding.Unicode.GetBytes(secret) }
            .Any(needle => raw.AsSpan().IndexOf(needle) >= 0 || bytes.AsSpan().IndexOf(needle) >= 0);
    }
}
