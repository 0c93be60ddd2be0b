using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Xml.Linq;
using QuantTasks.Diagnostics;

namespace QuantTasks.Caching;

/// <summary>How to reach a remote cache. Every default is here.</summary>
/// <param name="Url">The server's base URL; entries live at <c>URL/quanttasks/v1/KEY.qtc</c>.</param>
/// <param name="Write">Upload what this build computes (false for pull-request builds: read only).</param>
/// <param name="Timeout">How long one request may take before the server counts as down for the rest of the run (default 30 s).</param>
/// <param name="Token">A bearer token, from <see cref="HttpCache.TokenVariable"/>; never printed.</param>
/// <param name="MaxEntryBytes">The largest entry accepted from the server (default 2 GiB): a hostile server cannot make the build read forever.</param>
internal sealed record RemoteCacheOptions(Uri Url, bool Write = true, TimeSpan? Timeout = null, string? Token = null, long MaxEntryBytes = 2L << 30)
{
    /// <summary>The timeout in force.</summary>
    public TimeSpan EffectiveTimeout => Timeout ?? TimeSpan.FromSeconds(30);

    /// <summary>The longest timeout accepted: an hour (a request that slow has long made the cache useless).</summary>
    public const double MaxTimeoutSeconds = 3600;

    /// <summary>
    /// The options the environment and command line give: <paramref name="url"/> (else <c>QUANTTASKS_CACHE_URL</c>),
    /// read-only when asked (or <c>QUANTTASKS_CACHE_READ_ONLY</c> is 1/true), the token from
    /// <c>QUANTTASKS_CACHE_TOKEN</c> only. Null when no URL is set.
    /// </summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.Usage"/> for a URL that is not absolute http(s), or a timeout outside (0, 1 hour].</exception>
    public static RemoteCacheOptions? From(string? url, bool readOnly, double? timeoutSeconds)
    {
        // Checked even without a URL: a typo in a CI script should fail where it is written, not when a cache is added.
        if (timeoutSeconds is { } seconds && !(seconds > 0 && seconds <= MaxTimeoutSeconds))
        {
            throw new QuantException(ErrorCode.Usage, string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"--cache-timeout {seconds} is not a number of seconds from above 0 to {MaxTimeoutSeconds}; omit it for the default (30)."));
        }

        url = string.IsNullOrWhiteSpace(url) ? Environment.GetEnvironmentVariable(HttpCache.UrlVariable) : url;
        if (string.IsNullOrWhiteSpace(url))
        {
            return null;
        }

        if (!Uri.TryCreate(url.Trim(), UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new QuantException(ErrorCode.Usage, $"The remote cache URL '{HttpCache.Redact(url)}' is not an absolute http:// or https:// URL.");
        }

        if (!string.IsNullOrEmpty(uri.UserInfo))
        {
            throw new QuantException(ErrorCode.Usage,
                $"The remote cache URL '{HttpCache.Redact(url)}' carries credentials; put the token in ${HttpCache.TokenVariable} instead, where no log or command line shows it.");
        }

        var readOnlyVariable = Environment.GetEnvironmentVariable(HttpCache.ReadOnlyVariable);
        readOnly |= readOnlyVariable is "1" || string.Equals(readOnlyVariable, "true", StringComparison.OrdinalIgnoreCase);
        var token = Environment.GetEnvironmentVariable(HttpCache.TokenVariable);
        return new RemoteCacheOptions(uri, !readOnly, timeoutSeconds is { } timeout ? TimeSpan.FromSeconds(timeout) : null,
            string.IsNullOrWhiteSpace(token) ? null : token.Trim());
    }
}

/// <summary>What a remote cache did in one run.</summary>
internal sealed class RemoteCacheStatistics
{
    public int Lookups;
    public int Hits;
    public int Misses;
    public int Rejected;
    public int Errors;
    public int Uploads;
    public long BytesDownloaded;
    public long BytesUploaded;
}

/// <summary>One entry a server lists.</summary>
/// <param name="Key">The content key.</param>
/// <param name="Bytes">Its archive's size, when the server says.</param>
internal sealed record RemoteEntry(string Key, long? Bytes);

/// <summary>
/// A cache on any HTTP server that takes GET, HEAD and PUT of a file by URL (nginx with WebDAV PUT, bazel-remote,
/// an object store): one <see cref="CacheArchive"/> per key. Nothing it meets fails a build: a server that is
/// down, refuses, is slow or answers with an error gives one warning (QT1009) and the model is computed here; after
/// a server is found down it is not asked again in the same run, so a build never waits on it twice. An entry whose
/// checksum or key does not hold is never used (QT1010).
/// </summary>
internal sealed class HttpCache : ResultCache, IDisposable
{
    /// <summary>Environment variable with the server's base URL (the MSBuild property <c>QuantCacheUrl</c> and <c>--cache-url</c> win).</summary>
    public const string UrlVariable = "QUANTTASKS_CACHE_URL";

    /// <summary>Environment variable with a bearer token; the only way to give one, so it is on no command line and in no log.</summary>
    public const string TokenVariable = "QUANTTASKS_CACHE_TOKEN";

    /// <summary>Environment variable that makes the remote read-only (1 or true).</summary>
    public const string ReadOnlyVariable = "QUANTTASKS_CACHE_READ_ONLY";

    private const string Prefix = "quanttasks/v1/";
    private const string Extension = ".qtc";

    private readonly HttpClient _client;
    private readonly Uri _entries;
    private readonly RemoteCacheOptions _options;
    private bool _down;

    public HttpCache(RemoteCacheOptions options, HttpMessageHandler? handler = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        var baseUrl = options.Url.AbsoluteUri.EndsWith('/') ? options.Url : new Uri(options.Url.AbsoluteUri + "/");
        _entries = new Uri(baseUrl, Prefix);
        _client = new HttpClient(handler ?? new SocketsHttpHandler { ConnectTimeout = options.EffectiveTimeout, AllowAutoRedirect = false })
        {
            Timeout = options.EffectiveTimeout,
        };
        _client.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("QuantTasks", typeof(HttpCache).Assembly.GetName().Version?.ToString(3) ?? "0"));
        if (options.Token is { } token)
        {
            _client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
    }

    /// <summary>What this cache did so far.</summary>
    public RemoteCacheStatistics Statistics { get; } = new();

    /// <summary>Whether results are uploaded.</summary>
    public bool Writes => _options.Write;

    /// <summary>The base URL without credentials or query (tokens never go in URLs, but a user might try).</summary>
    public override string Location => Redact(_options.Url.AbsoluteUri);

    /// <summary>A URL as it may be shown: scheme, host, port and path only.</summary>
    public static string Redact(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.GetComponents(UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.UriEscaped) : "(not a URL)";

    public override CachedResult? TryGet(string key, Action<string>? note = null, CancellationToken cancellation = default)
    {
        if (_down || !IsKey(key))
        {
            return null;
        }

        Interlocked.Increment(ref Statistics.Lookups);
        var archive = Send(HttpMethod.Get, key, null, note, cancellation, out var status);
        if (archive is null)
        {
            if (status == HttpStatusCode.NotFound)
            {
                Interlocked.Increment(ref Statistics.Misses);
            }

            return null;
        }

        Interlocked.Add(ref Statistics.BytesDownloaded, archive.Length);
        if (CacheArchive.TryUnpack(key, archive, out var problem) is { } result)
        {
            Interlocked.Increment(ref Statistics.Hits);
            return result;
        }

        Interlocked.Increment(ref Statistics.Rejected);
        note?.Invoke(ErrorCode.RemoteCacheEntryRejected.Warning(
            $"The remote cache's entry {key[..16]} at {Location} is not used: {problem}. The model is computed here."));
        return null;
    }

    public override void Put(string key, CachedResult result, Action<string>? note = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (_down || !_options.Write || !IsKey(key))
        {
            return;
        }

        var archive = CacheArchive.Pack(key, result);
        if (Send(HttpMethod.Put, key, archive, note, cancellation, out _) is not null)
        {
            Interlocked.Increment(ref Statistics.Uploads);
            Interlocked.Add(ref Statistics.BytesUploaded, archive.Length);
        }
    }

    /// <summary>Whether the server holds <paramref name="key"/> (HEAD); null when it cannot be asked.</summary>
    public bool? Contains(string key, Action<string>? note = null, CancellationToken cancellation = default)
    {
        if (_down || !IsKey(key))
        {
            return null;
        }

        var found = Send(HttpMethod.Head, key, null, note, cancellation, out var status);
        return found is not null ? true : status == HttpStatusCode.NotFound ? false : null;
    }

    /// <summary>
    /// The entries the server lists: WebDAV's PROPFIND (Apache, nginx with dav-ext, most object-store gateways),
    /// else nginx's JSON autoindex. Null when the server lists neither way (Bazel's HTTP caches do not list).
    /// </summary>
    public IReadOnlyList<RemoteEntry>? List(Action<string>? note = null, CancellationToken cancellation = default)
    {
        if (_down)
        {
            return null;
        }

        try
        {
            using var propfind = new HttpRequestMessage(new HttpMethod("PROPFIND"), _entries);
            propfind.Headers.Add("Depth", "1");
            using (var response = _client.Send(propfind, cancellation))
            {
                if ((int)response.StatusCode == 207)
                {
                    return ParsePropfind(ReadLimited(response, cancellation));
                }

                if (response.StatusCode == HttpStatusCode.NotFound)
                {
                    return [];
                }
            }

            using var index = new HttpRequestMessage(HttpMethod.Get, _entries);
            index.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
            using var listing = _client.Send(index, cancellation);
            if (listing.StatusCode == HttpStatusCode.NotFound)
            {
                return [];
            }

            if (listing.IsSuccessStatusCode && listing.Content.Headers.ContentType?.MediaType == "application/json")
            {
                return ParseAutoindex(ReadLimited(listing, cancellation));
            }

            return null;
        }
        catch (Exception e) when (IsTransportFailure(e, cancellation))
        {
            MarkDown(e, note);
            return null;
        }
        catch (Exception e) when (e is System.Xml.XmlException or JsonException or InvalidOperationException or EntryTooLargeException)
        {
            // A listing that is not what it claims (or a hostile one): nothing listed, nothing fetched.
            note?.Invoke(ErrorCode.RemoteCacheEntryRejected.Warning($"The remote cache at {Location} sent a listing that cannot be read ({e.Message}); nothing is taken from it."));
            return null;
        }
    }

    public void Dispose() => _client.Dispose();

    private static bool IsKey(string key) => key.Length is >= 16 and <= 128 && key.All(char.IsAsciiHexDigitLower);

    private Uri EntryUri(string key) => new(_entries, key + Extension);

    /// <summary>One request; the body on success, null otherwise (with a warning unless the answer is a plain 404 miss).</summary>
    private byte[]? Send(HttpMethod method, string key, byte[]? body, Action<string>? note, CancellationToken cancellation, out HttpStatusCode? status)
    {
        status = null;
        try
        {
            using var request = new HttpRequestMessage(method, EntryUri(key));
            if (body is not null)
            {
                request.Content = new ByteArrayContent(body);
                request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            }

            using var response = _client.Send(request, HttpCompletionOption.ResponseHeadersRead, cancellation);
            status = response.StatusCode;
            if (response.IsSuccessStatusCode)
            {
                return method == HttpMethod.Get ? ReadLimited(response, cancellation) : [];
            }

            if (response.StatusCode == HttpStatusCode.NotFound && method != HttpMethod.Put)
            {
                return null;
            }

            Interlocked.Increment(ref Statistics.Errors);
            var what = method == HttpMethod.Put ? "store the result in" : "read";
            note?.Invoke(ErrorCode.RemoteCacheUnavailable.Warning(string.Create(CultureInfo.InvariantCulture,
                $"Could not {what} the remote cache at {Location}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}.")
                + (method == HttpMethod.Put ? " The build goes on; the next one computes this model again." : " The model is computed here.")));
            if ((int)response.StatusCode is 401 or 403 || (int)response.StatusCode >= 500)
            {
                _down = true; // the same answer would come for every model
            }

            return null;
        }
        catch (Exception e) when (IsTransportFailure(e, cancellation))
        {
            MarkDown(e, note);
            return null;
        }
        catch (EntryTooLargeException e)
        {
            Interlocked.Increment(ref Statistics.Rejected);
            note?.Invoke(ErrorCode.RemoteCacheEntryRejected.Warning($"The remote cache's entry {key[..16]} at {Location} is not used: {e.Message}. The model is computed here."));
            return null;
        }
    }

    private void MarkDown(Exception e, Action<string>? note)
    {
        Interlocked.Increment(ref Statistics.Errors);
        _down = true;
        var why = e is TaskCanceledException or TimeoutException or OperationCanceledException
            ? string.Create(CultureInfo.InvariantCulture, $"no answer within {_options.EffectiveTimeout.TotalSeconds:0.#} s")
            : (e.InnerException ?? e).Message;
        note?.Invoke(ErrorCode.RemoteCacheUnavailable.Warning(
            $"The remote cache at {Location} cannot be reached ({why}); this run computes its models here and does not ask it again."));
    }

    // A cancelled build is not a server fault: its cancellation goes on up.
    private static bool IsTransportFailure(Exception e, CancellationToken cancellation) =>
        !cancellation.IsCancellationRequested && e is HttpRequestException or TaskCanceledException or TimeoutException or IOException;

    private byte[] ReadLimited(HttpResponseMessage response, CancellationToken cancellation)
    {
        if (response.Content.Headers.ContentLength is { } declared && declared > _options.MaxEntryBytes)
        {
            throw new EntryTooLargeException(declared, _options.MaxEntryBytes);
        }

        using var stream = response.Content.ReadAsStream(cancellation);
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = stream.Read(chunk, 0, chunk.Length)) > 0)
        {
            if (buffer.Length + read > _options.MaxEntryBytes)
            {
                throw new EntryTooLargeException(buffer.Length + read, _options.MaxEntryBytes);
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    private static RemoteEntry[] ParsePropfind(byte[] xml)
    {
        XNamespace dav = "DAV:";
        // No DTD: a server's entities could expand without bound (or reach for other URLs).
        using var reader = System.Xml.XmlReader.Create(new MemoryStream(xml), new System.Xml.XmlReaderSettings { DtdProcessing = System.Xml.DtdProcessing.Prohibit, XmlResolver = null });
        var document = XDocument.Load(reader, LoadOptions.None);
        return document.Descendants(dav + "response")
            .Select(r => (Href: (string?)r.Element(dav + "href") ?? "", Length: (string?)r.Descendants(dav + "getcontentlength").FirstOrDefault()))
            .Select(r => (Name: Uri.UnescapeDataString(r.Href.TrimEnd('/').Split('/')[^1]), r.Length))
            .Where(r => r.Name.EndsWith(Extension, StringComparison.Ordinal) && IsKey(r.Name[..^Extension.Length]))
            .Select(r => new RemoteEntry(r.Name[..^Extension.Length], long.TryParse(r.Length, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : null))
            .OrderBy(e => e.Key, StringComparer.Ordinal)
            .ToArray();
    }

    private static RemoteEntry[] ParseAutoindex(byte[] json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.EnumerateArray()
            .Where(e => e.TryGetProperty("name", out _) && e.TryGetProperty("type", out var type) && type.GetString() == "file")
            .Select(e => (Name: e.GetProperty("name").GetString() ?? "", Size: e.TryGetProperty("size", out var size) && size.TryGetInt64(out var n) ? n : (long?)null))
            .Where(e => e.Name.EndsWith(Extension, StringComparison.Ordinal) && IsKey(e.Name[..^Extension.Length]))
            .Select(e => new RemoteEntry(e.Name[..^Extension.Length], e.Size))
            .OrderBy(e => e.Key, StringComparer.Ordinal)
            .ToArray();
    }

    private sealed class EntryTooLargeException(long bytes, long limit)
        : Exception(string.Create(CultureInfo.InvariantCulture, $"it is {bytes:N0} bytes or more, over the {limit:N0}-byte limit"));
}
