using System.Globalization;

namespace QuantTasks.Build.Tests.EndToEnd;

/// <summary>
/// The packages a plain <c>dotnet pack QuantTasks.sln</c> of this checkout makes (QuantTasks, QuantTasks.Runtime,
/// and dotnet-quant with its three platform packages), in a local folder feed, once for all end-to-end tests. The
/// version is unique to the run, so that NuGet's global packages folder (shared with every other build on the
/// machine, and holding the engine's TorchSharp and libtorch already) never serves a stale copy of ours.
/// </summary>
public sealed class PackageFeed : IDisposable
{
    public PackageFeed()
    {
        Version = "0.1.0-e2e." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture);
        Folder = Path.Combine(Path.GetTempPath(), "quanttasks-tests", "feed-" + Version);
        Directory.CreateDirectory(Folder);
        Pack(Path.Combine(DotNet.RepositoryRoot, "QuantTasks.sln"));
    }

    /// <summary>The platforms the tool has a package for.</summary>
    public static IReadOnlyList<string> ToolRuntimes { get; } = ["linux-x64", "win-x64", "osx-arm64"];

    /// <summary>The packages' version.</summary>
    public string Version { get; }

    /// <summary>The feed folder.</summary>
    public string Folder { get; }

    public string Package(string id) => Path.Combine(Folder, $"{id}.{Version}.nupkg");

    public void Dispose()
    {
        // Our packages were extracted into the global packages folder under this run's version; remove them.
        var global = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } set
            ? set
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        foreach (var id in new[] { "quanttasks", "quanttasks.runtime", "dotnet-quant" }.Concat(ToolRuntimes.Select(r => "dotnet-quant." + r)))
        {
            TryDelete(Path.Combine(global, id, Version));
        }

        TryDelete(Folder);
    }

    private void Pack(string project, params string[] extra)
    {
        var (exit, output) = DotNet.Run(DotNet.RepositoryRoot,
            ["pack", project, "-c", "Release", "-o", Folder, $"-p:PackageVersion={Version}", "-tl:off", "-nodeReuse:false", .. extra]);
        if (exit != 0)
        {
            throw new InvalidOperationException($"Packing {project} failed:\n{output}");
        }
    }

    internal static void TryDelete(string folder)
    {
        try
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
        }
        catch (IOException)
        {
            // A temporary folder: left for the system to clean.
        }
        catch (UnauthorizedAccessException)
        {
            // Likewise.
        }
    }
}

[CollectionDefinition(Name)]
public sealed class SharedPackageFeed : ICollectionFixture<PackageFeed>
{
    public const string Name = "package feed";
}
