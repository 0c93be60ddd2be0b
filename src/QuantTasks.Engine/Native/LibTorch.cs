using System.Runtime.InteropServices;
using System.Security.Cryptography;
using QuantTasks.Diagnostics;
using TorchSharp;

namespace QuantTasks.Engine.Native;

/// <summary>
/// Loads libtorch through TorchSharp on any Linux host, with no manual step.
/// </summary>
/// <remarks>
/// TorchSharp 0.107's own glue library, <c>libLibTorchSharp.so</c>, is built with GCC 13 and needs the symbol
/// version <c>GLIBCXX_3.4.32</c> for one symbol, <c>_ZSt21ios_base_library_initv</c>, which GCC 13's headers
/// reference without calling. Hosts with an older libstdc++ (Debian 12, Ubuntu 22.04) refuse to load it. On
/// such a host a copy of the library is made in a per-user cache with that symbol unversioned and that version
/// marked weak, and TorchSharp is pointed at the copy; the NuGet cache is never touched. Hosts whose libstdc++
/// has the version load the original.
/// </remarks>
internal static class LibTorch
{
    /// <summary>Environment variable that overrides where the patched copy is kept.</summary>
    public const string CacheVariable = "QUANTTASKS_NATIVE_CACHE";

    internal const string GlueLibrary = "libLibTorchSharp.so";
    internal const string MissingVersion = "GLIBCXX_3.4.32";
    internal const string UnusedSymbol = "_ZSt21ios_base_library_initv";

    private static readonly Lock s_gate = new();
    private static string? s_how;

    /// <summary>How libtorch was loaded (for <c>--verbose</c> output and bug reports); null before <see cref="EnsureLoaded"/>.</summary>
    public static string? LoadedHow => s_how;

    /// <summary>
    /// The scalar 1, created once outside any dispose scope and never released: the alpha of tensor additions
    /// and subtractions in the Hessian engine's hot loops. TorchSharp's operators create a temporary scalar for
    /// it on every call, and a temporary that the garbage collector finalizes while libtorch still reads it is
    /// the likely cause of a "toFloat" failure seen after thousands of Hessian-vector products.
    /// </summary>
    internal static Scalar One { get; private set; } = null!;

    /// <summary>The scalar -1, made and kept like <see cref="One"/>: the alpha of subtractions (a.add(b, MinusOne)).</summary>
    internal static Scalar MinusOne { get; private set; } = null!;

    /// <summary>The scalar 0, made and kept like <see cref="One"/>: comparisons against zero.</summary>
    internal static Scalar Zero { get; private set; } = null!;

    /// <summary>
    /// The first tensor operators run here, outside any dispose scope. A long analysis failed after thousands of
    /// Hessian-vector products with a corrupt scalar inside Tensor + Tensor ("toFloat: Expected false to be
    /// true"), consistent with a scalar TorchSharp keeps after first use being released by the dispose scope that
    /// was open at that first use; making the first use here keeps such objects out of every scope.
    /// </summary>
    private static void WarmUpOutsideDisposeScopes(torch.Tensor probe)
    {
        One = 1.ToScalar();
        MinusOne = (-1).ToScalar();
        Zero = 0.ToScalar();
        using var sum = probe + probe;
        using var difference = probe - probe;
        using var product = probe * probe;
        using var quotient = probe / (probe + 1);
        using var scaled = probe * 2.0;
        using var shifted = probe + 1.0;
        using var fromScalar = 1.0 - probe;
        using var added = probe.add(probe, 0.5);

        // What fine-tuning's losses and optimizers use (in place updates with scalar factors among them).
        using var state = probe.clone();
        state.mul_(0.5).add_(probe, alpha: 0.5).addcmul_(probe, probe, value: 0.5).addcdiv_(probe, probe + 1, value: -0.5);
        using var root = state.abs().div(2.0).sqrt_().add_(1e-8);
        using var negated = -probe;
        using var exponent = probe.exp();
        using var chosen = torch.where(probe.gt(0), probe, negated);
        using var logSigmoid = torch.nn.functional.logsigmoid(probe);
        using var logSoftmax = torch.nn.functional.log_softmax(probe.reshape(1, -1), 1);
        using var labels = torch.zeros(1, torch.ScalarType.Int64);
        using var crossEntropy = torch.nn.functional.cross_entropy(probe.reshape(1, -1), labels);
        using var moments = probe.square().mean() + probe.sum();
        using var masked = probe.clone().masked_fill_(probe.gt(0), 0f);
    }

    /// <summary>
    /// Makes sure TorchSharp can call libtorch, patching its glue library first where the host needs it.
    /// Safe to call any number of times from any thread.
    /// </summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.TorchUnavailable"/>: libtorch cannot be loaded here, with the reason.</exception>
    /// <param name="note">Hears of a first-use restore of libtorch from NuGet (the tool package carries none).</param>
    public static void EnsureLoaded(Action<string>? note = null)
    {
        lock (s_gate)
        {
            if (s_how is not null)
            {
                return;
            }

            var how = "TorchSharp's own loader";
            try
            {
                var needsPatch = OperatingSystem.IsLinux() && !HostLibStdCxxProvides(MissingVersion);
                var glueBeside = FindOriginalGlue();
                var libtorchBeside = glueBeside is null ? null : NativeSearchFolders(Path.GetDirectoryName(glueBeside)!)
                    .FirstOrDefault(f => File.Exists(Path.Combine(f, NativePackages.FileNames.Torch)));
                if (glueBeside is not null && libtorchBeside is not null)
                {
                    if (needsPatch)
                    {
                        how = LoadGlue(glueBeside, libtorchBeside, patch: true);
                    }
                }
                else
                {
                    // The tool package carries TorchSharp's glue but not libtorch: take libtorch from the NuGet cache.
                    var (glue, libtorch) = NativePackages.Locate(note);
                    how = "NuGet cache: " + LoadGlue(glueBeside ?? Path.Combine(glue, NativePackages.FileNames.Glue), libtorch, needsPatch);
                }

                // Any call initializes TorchSharp's native backend; a failure surfaces here, not mid-analysis.
                using var probe = torch.zeros(1);
                WarmUpOutsideDisposeScopes(probe);
                if (OneDnn.Enabled() is null)
                {
                    note?.Invoke("libtorch does not let its oneDNN kernels be turned off; their float32 gradients of strided convolutions are wrong for some shapes, "
                        + "and the analysis retries NaN results but cannot see wrong finite ones");
                }
            }
            catch (QuantException)
            {
                throw;
            }
            catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or InvalidOperationException
                                          or IOException or UnauthorizedAccessException or NotSupportedException)
            {
                throw new QuantException(ErrorCode.TorchUnavailable,
                    $"libtorch (TorchSharp {typeof(torch).Assembly.GetName().Version}) cannot be loaded on this machine: {Innermost(e).Message} "
                    + "The Hessian analysis needs it. Check that the TorchSharp-cpu package restored its native files next to dotnet-quant, "
                    + "or set 'sensitivity.method: none' to quantize without the analysis.",
                    innerException: e);
            }

            s_how = how;
        }
    }

    /// <summary>Whether the libstdc++ this process uses defines <paramref name="version"/>.</summary>
    internal static bool HostLibStdCxxProvides(string version)
    {
        var path = LoadedLibraryPath("libstdc++.so.6");
        if (path is null)
        {
            // No libstdc++ at all: libtorch cannot load either way; let TorchSharp say so.
            return true;
        }

        return ElfImage.Parse(File.ReadAllBytes(path)).DefinedVersions().Contains(version);
    }

    /// <summary>
    /// Writes the patched glue library into the cache (once per original file, keyed by its hash) and returns it.
    /// The copy is written under a temporary name and renamed, so concurrent processes never see half a file.
    /// </summary>
    internal static string PatchedCopy(string original, string cacheRoot)
    {
        var bytes = File.ReadAllBytes(original);
        var key = Convert.ToHexStringLower(SHA256.HashData(bytes))[..16];
        var folder = Path.Combine(cacheRoot, key);
        var target = Path.Combine(folder, GlueLibrary);
        if (File.Exists(target))
        {
            return target;
        }

        var image = ElfImage.Parse(bytes);
        if (!image.MarkNeededVersionWeak(MissingVersion))
        {
            // A TorchSharp build that does not need the version: the original loads as it is.
            return original;
        }

        image.ClearSymbolVersion(UnusedSymbol);
        Directory.CreateDirectory(folder);
        var temp = Path.Combine(folder, $"{GlueLibrary}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        File.WriteAllBytes(temp, image.Bytes);
        File.Move(temp, target, overwrite: true);
        return target;
    }

    /// <summary>The per-user folder for patched native libraries.</summary>
    internal static string CacheRoot()
    {
        var overridden = Environment.GetEnvironmentVariable(CacheVariable);
        if (!string.IsNullOrEmpty(overridden))
        {
            return overridden;
        }

        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg)
            ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "quanttasks", "native");
    }

    /// <summary>Where the original glue library was restored next to the application, or null.</summary>
    internal static string? FindOriginalGlue()
    {
        var rid = "linux-" + RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        var folders = new[]
        {
            AppContext.BaseDirectory,
            Path.GetDirectoryName(typeof(torch).Assembly.Location) ?? AppContext.BaseDirectory,
        };
        return folders.SelectMany(f => new[] { Path.Combine(f, "runtimes", rid, "native"), f })
            .Concat(HostNativeSearchDirectories())
            .Select(f => Path.Combine(f, NativePackages.FileNames.Glue))
            .FirstOrDefault(File.Exists);
    }

    /// <summary>The folder given first, then the native folders the .NET host resolved from the deps file.</summary>
    private static IEnumerable<string> NativeSearchFolders(string first) =>
        new[] { first }.Concat(HostNativeSearchDirectories());

    /// <summary>
    /// Where the .NET host found native assets: the app folder for a build output, the package folders in the
    /// NuGet cache when the engine runs with <c>--additionalprobingpath</c> (how the QuantTasks package runs it).
    /// </summary>
    private static string[] HostNativeSearchDirectories() =>
        (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Loads libtorch, then the glue library (a patched copy where the host needs one), and points TorchSharp at it.</summary>
    private static string LoadGlue(string original, string libtorchFolder, bool patch)
    {
        var patched = patch ? PatchedCopy(original, CacheRoot()) : original;

        // The copy's RUNPATH ($ORIGIN) no longer finds libtorch; load libtorch first so that the copy's
        // dependencies resolve to the already-loaded libraries by their sonames. libtorch sits beside the glue
        // library in a build output, and in its own package folder when the engine runs from the NuGet cache.
        var libtorch = NativeSearchFolders(libtorchFolder)
            .Select(f => Path.Combine(f, NativePackages.FileNames.Torch))
            .FirstOrDefault(File.Exists) ?? throw new QuantException(ErrorCode.TorchUnavailable,
                $"libtorch is neither in {libtorchFolder} nor in the native folders the .NET host resolved. "
                + "Restore again so that the libtorch-cpu package's native files are present.");
        NativeLibrary.Load(libtorch);
        var handle = NativeLibrary.Load(patched);
        NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, (name, _, _) =>
            name.Contains("LibTorchSharp", StringComparison.Ordinal) ? handle : IntPtr.Zero);
        return patched == original ? $"original {original}" : $"patched copy {patched} of {original}";
    }

    private static string? LoadedLibraryPath(string soname)
    {
        if (!NativeLibrary.TryLoad(soname, out _))
        {
            return null;
        }

        // The dynamic loader knows which file it mapped; /proc/self/maps lists it.
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            // The mapped file may be the soname itself or the versioned file it links to (libstdc++.so.6.0.30).
            var slash = line.IndexOf('/', StringComparison.Ordinal);
            if (slash >= 0 && Path.GetFileName(line[slash..]).StartsWith(soname, StringComparison.Ordinal))
            {
                return line[slash..];
            }
        }

        return null;
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
        {
            e = e.InnerException;
        }

        return e;
    }
}
