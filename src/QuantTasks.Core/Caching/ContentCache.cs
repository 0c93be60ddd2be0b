using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using QuantTasks.Diagnostics;

namespace QuantTasks.Caching;

/// <summary>What one model's pipeline produced, as the cache keeps it.</summary>
/// <param name="Model">The model's name (for <c>cache list</c>).</param>
/// <param name="Blob">The blob's bytes.</param>
/// <param name="Code">The generated C# loader.</param>
/// <param name="Report">The model's report entry as JSON.</param>
internal sealed record CachedResult(string Model, byte[] Blob, string Code, string Report);

/// <summary>One entry, as <c>dotnet quant cache list</c> shows it.</summary>
/// <param name="Key">The content hash (hex).</param>
/// <param name="Model">The model's name.</param>
/// <param name="Created">When the entry was written (UTC).</param>
/// <param name="Bytes">The entry's size on disk.</param>
/// <param name="Valid">Whether every file matches the checksum its manifest records.</param>
internal sealed record CacheEntryInfo(string Key, string Model, DateTimeOffset Created, long Bytes, bool Valid);

/// <summary>
/// The content-hash cache: one folder per key holding blob, generated code and report, plus a manifest with
/// each file's SHA-256. An entry is written whole into a temporary folder and renamed into place, so readers
/// never see half an entry; when several builds write the same key at once, the first rename wins and the others
/// discard their (identical) copies. An entry whose files do not match its manifest is removed and reported as a
/// miss, so the caller rebuilds it.
/// </summary>
internal sealed class ContentCache : ResultCache
{
    /// <summary>Environment variable naming the cache folder (the MSBuild property <c>QuantCacheDirectory</c> wins over it).</summary>
    public const string DirectoryVariable = "QUANTTASKS_CACHE_DIR";

    private const int FormatVersion = 1;
    private const string ManifestName = "manifest.json";
    private const string BlobName = "model.qtblob";
    private const string CodeName = "loader.cs.cached"; // not *.cs: a cache inside a project folder must not be compiled
    private const string ReportName = "report.json";
    private const string TagName = "CACHEDIR.TAG";

    // The signature the Cache Directory Tagging specification requires as the tag file's first line.
    private const string TagSignature = "Signature: 8a477f597d28d172789f06886806bc55";
    private static readonly string VersionFolder = "v" + FormatVersion.ToString(CultureInfo.InvariantCulture);

    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    /// <summary>Opens (without creating) the cache in <paramref name="root"/>.</summary>
    public ContentCache(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = Path.GetFullPath(root);
    }

    /// <summary>The cache's folder.</summary>
    public string Root { get; }

    public override string Location => Root;

    /// <summary>
    /// The per-user default: <c>QUANTTASKS_CACHE_DIR</c> when set; else <c>%LOCALAPPDATA%\QuantTasks\cache</c> on
    /// Windows, <c>$XDG_CACHE_HOME/quanttasks/models</c> or <c>~/.cache/quanttasks/models</c> elsewhere.
    /// </summary>
    public static string DefaultRoot()
    {
        var overridden = Environment.GetEnvironmentVariable(DirectoryVariable);
        if (!string.IsNullOrEmpty(overridden))
        {
            return overridden;
        }

        if (OperatingSystem.IsWindows())
        {
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "QuantTasks", "cache");
        }

        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "quanttasks", "models");
    }

    /// <summary>The entry for <paramref name="key"/>, or null on a miss. A corrupt entry is removed and is a miss.</summary>
    /// <param name="key">The content hash, hex.</param>
    /// <param name="note">Hears why an entry was discarded.</param>
    /// <param name="cancellation">Not used: a local read is not worth interrupting.</param>
    public override CachedResult? TryGet(string key, Action<string>? note = null, CancellationToken cancellation = default)
    {
        var folder = EntryFolder(key);
        if (!Directory.Exists(folder))
        {
            return null;
        }

        try
        {
            var (manifest, problem) = Verify(folder);
            if (manifest is null)
            {
                note?.Invoke($"The cache entry {folder} is damaged ({problem}); it is removed and the model is compressed again.");
                Remove(folder);
                return null;
            }

            return new CachedResult(
                manifest.Model,
                File.ReadAllBytes(Path.Combine(folder, BlobName)),
                File.ReadAllText(Path.Combine(folder, CodeName)),
                File.ReadAllText(Path.Combine(folder, ReportName)));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Another build removing or replacing the entry right now: treat as a miss and compute it again.
            note?.Invoke($"The cache entry {folder} could not be read ({e.Message}); the model is compressed again.");
            return null;
        }
    }

    /// <summary>
    /// Stores an entry. Never throws for a cache that cannot be written (read-only, full disk): the build's
    /// outputs do not depend on the cache, so such a failure is only reported through <paramref name="note"/>.
    /// </summary>
    /// <param name="key">The content hash, hex.</param>
    /// <param name="result">What to keep.</param>
    /// <param name="note">Hears why the entry could not be stored.</param>
    /// <param name="cancellation">Not used: an entry is written whole or not at all.</param>
    public override void Put(string key, CachedResult result, Action<string>? note = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(result);
        var folder = EntryFolder(key);
        var temp = $"{folder}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            Directory.CreateDirectory(temp);
            WriteTag(note);
            var files = new SortedDictionary<string, CachedFile>(StringComparer.Ordinal)
            {
                [BlobName] = Write(Path.Combine(temp, BlobName), result.Blob),
                [CodeName] = Write(Path.Combine(temp, CodeName), System.Text.Encoding.UTF8.GetBytes(result.Code)),
                [ReportName] = Write(Path.Combine(temp, ReportName), System.Text.Encoding.UTF8.GetBytes(result.Report)),
            };
            var manifest = new CacheManifest(FormatVersion, key, result.Model, DateTimeOffset.UtcNow, files);
            Write(Path.Combine(temp, ManifestName), JsonSerializer.SerializeToUtf8Bytes(manifest, s_json));

            if (Directory.Exists(folder) && Verify(folder).Manifest is null)
            {
                Remove(folder);
            }

            Directory.Move(temp, folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Most often another build stored the same key first; its entry is as good as ours.
            if (!Directory.Exists(folder))
            {
                note?.Invoke($"The result could not be stored in the cache at {Root}: {e.Message}");
            }
        }
        finally
        {
            TryDelete(temp);
        }
    }

    /// <summary>Every entry, newest first. Only the cache's own layout is read; nothing else in the folder is touched.</summary>
    public IReadOnlyList<CacheEntryInfo> List()
    {
        var entries = new List<CacheEntryInfo>();
        foreach (var folder in EntryFolders())
        {
            var bytes = Directory.EnumerateFiles(folder).Sum(f => new FileInfo(f).Length);
            var (manifest, _) = Verify(folder);
            var stored = manifest ?? ReadManifest(folder);
            entries.Add(new CacheEntryInfo(
                Path.GetFileName(folder),
                stored?.Model ?? "?",
                stored?.Created ?? Directory.GetLastWriteTimeUtc(folder),
                bytes,
                manifest is not null));
        }

        return entries.OrderByDescending(e => e.Created).ThenBy(e => e.Key, StringComparer.Ordinal).ToArray();
    }

    /// <summary>
    /// Removes every entry and every leftover of an interrupted write; returns how many entries there were.
    /// Only what the cache itself wrote is removed: entry folders named by their key under the version and
    /// fan-out folders, holding a manifest. A folder that is not a cache (no <c>CACHEDIR.TAG</c> of ours and
    /// no version folder, yet not empty) is refused whole, so a mistyped <c>--cache-dir</c> deletes nothing.
    /// </summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.NotACache"/> for a folder the cache did not make.</exception>
    public int Clear()
    {
        if (!Directory.Exists(Root))
        {
            return 0;
        }

        if (!LooksLikeCache())
        {
            throw new QuantException(ErrorCode.NotACache,
                $"'{Root}' is not a QuantTasks cache (it has no {TagName} written by QuantTasks and no {VersionFolder} folder); nothing was removed. Check --cache-dir or ${DirectoryVariable}.",
                new SourceLocation(Root));
        }

        var count = 0;
        foreach (var folder in EntryFolders())
        {
            Remove(folder);
            count++;
        }

        var version = Path.Combine(Root, VersionFolder);
        foreach (var fanOut in SafeDirectories(version).Where(d => IsFanOut(Path.GetFileName(d))))
        {
            // Leftovers of interrupted writes and removals: "<key>.<pid>.<guid>.tmp".
            foreach (var leftover in SafeDirectories(fanOut).Where(d => IsTemporary(Path.GetFileName(d))))
            {
                TryDelete(leftover);
            }

            TryDeleteIfEmpty(fanOut);
        }

        return count;
    }

    /// <summary>Whether the folder is one this cache wrote: our tag file, or the version folder of our layout.</summary>
    private bool LooksLikeCache()
    {
        var tag = Path.Combine(Root, TagName);
        if (File.Exists(tag) && new FileInfo(tag).LinkTarget is null)
        {
            try
            {
                if (File.ReadAllText(tag).StartsWith(TagSignature, StringComparison.Ordinal))
                {
                    return true;
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Unreadable: judged by the layout alone.
            }
        }

        var version = Path.Combine(Root, VersionFolder);
        return Directory.Exists(version) && new DirectoryInfo(version).LinkTarget is null
            || !Directory.EnumerateFileSystemEntries(Root).Any();
    }

    /// <summary>The entry folders of the cache's layout: <c>v1/ab/abcdef…/</c> holding a manifest, links never followed.</summary>
    private IEnumerable<string> EntryFolders()
    {
        var version = Path.Combine(Root, VersionFolder);
        if (!Directory.Exists(version) || new DirectoryInfo(version).LinkTarget is not null)
        {
            yield break;
        }

        foreach (var fanOut in SafeDirectories(version).Where(d => IsFanOut(Path.GetFileName(d))).Order(StringComparer.Ordinal))
        {
            var prefix = Path.GetFileName(fanOut);
            foreach (var folder in SafeDirectories(fanOut).Order(StringComparer.Ordinal))
            {
                var key = Path.GetFileName(folder);
                if (IsKey(key) && key.StartsWith(prefix, StringComparison.Ordinal) && File.Exists(Path.Combine(folder, ManifestName)))
                {
                    yield return folder;
                }
            }
        }
    }

    /// <summary>Subfolders that are real folders, not links (a link in the cache is never entered or deleted through).</summary>
    private static string[] SafeDirectories(string folder)
    {
        if (!Directory.Exists(folder))
        {
            return [];
        }

        return Directory.EnumerateDirectories(folder).Where(d => new DirectoryInfo(d).LinkTarget is null).ToArray();
    }

    private static bool IsKey(string name) => name.Length >= 16 && name.All(char.IsAsciiHexDigitLower);

    private static bool IsFanOut(string name) => name.Length == 2 && name.All(char.IsAsciiHexDigitLower);

    private static bool IsTemporary(string name)
    {
        var parts = name.Split('.');
        return parts.Length == 4 && IsKey(parts[0]) && parts[1].All(char.IsAsciiDigit) && parts[2].Length == 32
            && parts[2].All(char.IsAsciiHexDigitLower) && parts[3] == "tmp";
    }

    /// <summary>Marks the folder as a cache (the Cache Directory Tagging convention: backup tools skip it, and Clear knows it).</summary>
    private void WriteTag(Action<string>? note)
    {
        var tag = Path.Combine(Root, TagName);
        if (File.Exists(tag))
        {
            return;
        }

        try
        {
            AtomicFile.WriteAllText(tag, TagSignature + "\n# This folder is the QuantTasks content-hash cache; 'dotnet quant cache clear' empties it.\n");
        }
        catch (QuantException e)
        {
            note?.Invoke($"The cache tag {tag} could not be written: {e.Message}");
        }
    }

    private static void TryDeleteIfEmpty(string folder)
    {
        try
        {
            if (!Directory.EnumerateFileSystemEntries(folder).Any())
            {
                Directory.Delete(folder);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Another build writing into it right now.
        }
    }

    /// <summary>Where an entry lives: two-character fan-out keeps folders small.</summary>
    internal string EntryFolder(string key)
    {
        if (key.Length < 16 || !key.All(char.IsAsciiHexDigitLower))
        {
            throw new ArgumentException($"Not a lower-case hex content hash: '{key}'.", nameof(key));
        }

        return Path.Combine(Root, VersionFolder, key[..2], key);
    }

    private static (CacheManifest? Manifest, string Problem) Verify(string folder)
    {
        var manifest = ReadManifest(folder);
        if (manifest is null || manifest.Format != FormatVersion || manifest.Files is null)
        {
            return (null, "no readable manifest");
        }

        foreach (var name in new[] { BlobName, CodeName, ReportName })
        {
            var path = Path.Combine(folder, name);
            if (!manifest.Files.TryGetValue(name, out var expected) || !File.Exists(path))
            {
                return (null, $"{name} is missing");
            }

            var bytes = File.ReadAllBytes(path);
            if (bytes.Length != expected.Bytes || Convert.ToHexStringLower(SHA256.HashData(bytes)) != expected.Sha256)
            {
                return (null, $"{name} does not match its checksum");
            }
        }

        return (manifest, "");
    }

    private static CacheManifest? ReadManifest(string folder)
    {
        try
        {
            return JsonSerializer.Deserialize<CacheManifest>(File.ReadAllBytes(Path.Combine(folder, ManifestName)), s_json);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static CachedFile Write(string path, byte[] bytes)
    {
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            stream.Write(bytes);
            stream.Flush(flushToDisk: true);
        }

        return new CachedFile(bytes.Length, Convert.ToHexStringLower(SHA256.HashData(bytes)));
    }

    /// <summary>Renames the folder aside first, so a concurrent reader sees it gone rather than half-deleted.</summary>
    private static void Remove(string folder)
    {
        var doomed = $"{folder}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            Directory.Move(folder, doomed);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }

        TryDelete(doomed);
    }

    private static void TryDelete(string folder)
    {
        try
        {
            if (new DirectoryInfo(folder) is { LinkTarget: not null })
            {
                // A link is removed itself; what it points to is never deleted through it.
                File.Delete(folder);
            }
            else if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left for the next Clear; a .tmp folder is never read as an entry.
        }
    }

    private sealed record CachedFile(long Bytes, string Sha256);

    private sealed record CacheManifest(
        int Format,
        string Key,
        string Model,
        DateTimeOffset Created,
        [property: JsonPropertyName("files")] SortedDictionary<string, CachedFile> Files);
}
