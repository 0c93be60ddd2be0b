using System.Net;
using QuantTasks.Caching;
using QuantTasks.Diagnostics;

namespace QuantTasks.Core.Tests.Caching;

/// <summary>
/// The remote tier against a scripted server: what each answer does to the build (nothing fails it), what is
/// sent (the token, and nothing else secret), and the archive's checks byte by byte.
/// </summary>
public sealed class HttpCacheTests
{
    private const string Key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    private static readonly CachedResult s_result = new("Digits", [1, 2, 3, 250], "namespace App.Models;", "{\"name\":\"Digits\"}");

    [Fact]
    public void An_archive_round_trips_and_any_changed_byte_or_other_key_is_refused()
    {
        var archive = CacheArchive.Pack(Key, s_result);

        var back = CacheArchive.TryUnpack(Key, archive, out _);
        Assert.NotNull(back);
        Assert.Equal(s_result.Model, back.Model);
        Assert.Equal(s_result.Blob, back.Blob);
        Assert.Equal(s_result.Code, back.Code);
        Assert.Equal(s_result.Report, back.Report);

        for (var i = 0; i < archive.Length; i++)
        {
            var damaged = (byte[])archive.Clone();
            damaged[i] ^= 0x20;
            Assert.Null(CacheArchive.TryUnpack(Key, damaged, out var problem));
            Assert.NotEmpty(problem);
        }

        Assert.Null(CacheArchive.TryUnpack(Key, archive.AsSpan(0, archive.Length - 1), out var truncated));
        Assert.Contains("SHA-256", truncated, StringComparison.Ordinal);
        Assert.Null(CacheArchive.TryUnpack("fedcba9876543210" + Key[16..], archive, out var moved));
        Assert.Contains("SHA-256", moved, StringComparison.Ordinal);
        Assert.Null(CacheArchive.TryUnpack(Key, [], out _));
    }

    [Fact]
    public void A_hit_is_verified_and_counted_and_the_token_goes_only_in_the_authorization_header()
    {
        var server = new ScriptedServer(_ => Answer(HttpStatusCode.OK, CacheArchive.Pack(Key, s_result)));
        using var cache = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example:8080/ci"), Token: "s3cret"), server);

        var hit = cache.TryGet(Key);

        Assert.NotNull(hit);
        Assert.Equal(s_result.Blob, hit.Blob);
        var request = Assert.Single(server.Requests);
        Assert.Equal($"http://cache.example:8080/ci/quanttasks/v1/{Key}.qtc", request.Uri);
        Assert.Equal("Bearer s3cret", request.Authorization);
        Assert.Equal(1, cache.Statistics.Hits);
        Assert.DoesNotContain("s3cret", cache.Location, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(HttpStatusCode.InternalServerError)]
    [InlineData(HttpStatusCode.BadGateway)]
    [InlineData(HttpStatusCode.Unauthorized)]
    public void A_server_error_warns_once_with_QT1009_and_the_server_is_left_alone_for_the_run(HttpStatusCode status)
    {
        var server = new ScriptedServer(_ => Answer(status));
        using var cache = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example/")), server);
        var notes = new List<string>();

        Assert.Null(cache.TryGet(Key, notes.Add));
        Assert.Null(cache.TryGet(Key.Replace('0', '1'), notes.Add));
        cache.Put(Key, s_result, notes.Add);

        Assert.Single(server.Requests);
        var warning = Assert.Single(notes);
        Assert.StartsWith("QuantTasks: warning QT1009: ", warning, StringComparison.Ordinal);
        Assert.Contains(((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture), warning, StringComparison.Ordinal);
    }

    [Fact]
    public void A_miss_is_quiet_and_a_refused_upload_warns_without_failing()
    {
        var server = new ScriptedServer(r => Answer(r.Method == "PUT" ? HttpStatusCode.NotFound : HttpStatusCode.NotFound));
        using var cache = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example/")), server);
        var notes = new List<string>();

        Assert.Null(cache.TryGet(Key, notes.Add));
        Assert.Empty(notes);
        cache.Put(Key, s_result, notes.Add);

        Assert.Contains("warning QT1009", Assert.Single(notes), StringComparison.Ordinal);
        Assert.Equal(1, cache.Statistics.Misses);
        Assert.Equal(0, cache.Statistics.Uploads);
    }

    [Fact]
    public void An_entry_over_the_size_limit_is_refused_with_QT1010_before_it_is_read_whole()
    {
        var big = new byte[4096];
        var server = new ScriptedServer(_ => Answer(HttpStatusCode.OK, big));
        using var cache = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example/"), MaxEntryBytes: 1000), server);
        var notes = new List<string>();

        Assert.Null(cache.TryGet(Key, notes.Add));

        Assert.Contains("warning QT1010", Assert.Single(notes), StringComparison.Ordinal);
        Assert.Contains("limit", notes[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Read_only_never_uploads_and_keys_that_are_not_hashes_are_never_sent()
    {
        var server = new ScriptedServer(_ => Answer(HttpStatusCode.Created));
        using var readOnly = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example/"), Write: false), server);
        using var writable = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example/")), server);

        readOnly.Put(Key, s_result);
        writable.Put("../../etc/passwd", s_result);
        Assert.Null(writable.TryGet("ABCDEF0123456789ABCDEF"));
        Assert.Empty(server.Requests);

        writable.Put(Key, s_result);
        Assert.Equal("PUT", Assert.Single(server.Requests).Method);
    }

    [Theory]
    [InlineData(207, "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>")]
    [InlineData(207, "<multistatus xmlns=\"DAV:\"><response>")]
    [InlineData(200, "{\"not\": \"an array\"}")]
    [InlineData(200, "[{\"name\": ")]
    public void A_listing_that_cannot_be_read_is_refused_with_QT1010_and_lists_nothing(int status, string body)
    {
        var server = new ScriptedServer(r => r.Method == "PROPFIND" && status == 207 || r.Method == "GET" && status == 200
            ? new HttpResponseMessage((HttpStatusCode)status) { Content = new StringContent(body, System.Text.Encoding.UTF8, status == 200 ? "application/json" : "application/xml") }
            : Answer(HttpStatusCode.MethodNotAllowed));
        using var cache = new HttpCache(new RemoteCacheOptions(new Uri("http://cache.example/")), server);
        var notes = new List<string>();

        Assert.Null(cache.List(notes.Add));

        Assert.Contains("warning QT1010", Assert.Single(notes), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ftp://cache.example/")]
    [InlineData("cache.example")]
    [InlineData("http://user:pa55word@cache.example/")]
    public void A_url_that_is_not_plain_http_is_a_usage_error_that_never_echoes_credentials(string url)
    {
        var error = Assert.Throws<QuantException>(() => RemoteCacheOptions.From(url, readOnly: false, timeoutSeconds: null));

        Assert.Equal(ErrorCode.Usage, error.Code);
        Assert.DoesNotContain("pa55word", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-5.0)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(3601.0)]
    public void A_timeout_that_is_not_a_sensible_number_of_seconds_is_a_usage_error_even_without_a_cache(double seconds)
    {
        // Before, 0 and negative values silently meant the default and nothing was checked without a URL.
        var withUrl = Assert.Throws<QuantException>(() => RemoteCacheOptions.From("http://cache.example/", readOnly: false, timeoutSeconds: seconds));
        var without = Assert.Throws<QuantException>(() => RemoteCacheOptions.From("", readOnly: false, timeoutSeconds: seconds));

        Assert.Equal(ErrorCode.Usage, withUrl.Code);
        Assert.Equal(ErrorCode.Usage, without.Code);
        Assert.Contains("--cache-timeout", withUrl.Message, StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(0.5), RemoteCacheOptions.From("http://cache.example/", readOnly: false, timeoutSeconds: 0.5)!.EffectiveTimeout);
    }

    private static HttpResponseMessage Answer(HttpStatusCode status, byte[]? body = null) =>
        new(status) { Content = new ByteArrayContent(body ?? []) };

    private sealed record SeenRequest(string Method, string Uri, string? Authorization);

    /// <summary>Answers every request by a script and remembers what was asked.</summary>
    private sealed class ScriptedServer(Func<SeenRequest, HttpResponseMessage> script) : HttpMessageHandler
    {
        public List<SeenRequest> Requests { get; } = [];

        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var seen = new SeenRequest(request.Method.Method, request.RequestUri!.AbsoluteUri, request.Headers.Authorization?.ToString());
            Requests.Add(seen);
            return script(seen);
        }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Task.FromResult(Send(request, cancellationToken));
    }
}
