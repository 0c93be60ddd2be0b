using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using QuantTasks.Diagnostics;
using TorchSharp;

namespace QuantTasks.Engine.Native;

/// <summary>
/// libtorch from the NuGet cache, for an engine that does not carry it (the <c>dotnet-quant</c> tool package):
/// TorchSharp's glue library comes from the <c>TorchSharp</c> package folder and libtorch from the
/// <c>libtorch-cpu-{rid}</c> folder of the NuGet global packages folder. When either is missing, they are fetched
/// by <c>dotnet restore</c> of a generated project of two <c>PackageDownload</c> items (exact versions, only this
/// platform's libtorch), with the NuGet sources configured for the current folder and user, once per machine.
/// </summary>
internal static class NativePackages
{
    /// <summary>The libtorch version TorchSharp-cpu of this build depends on (from Directory.Packages.props).</summary>
    internal static string LibTorchVersion =>
        typeof(NativePackages).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .First(a => a.Key == "LibTorchVersion").Value!;

    /// <summary>TorchSharp's package version (the assembly's version without its revision).</summary>
    internal static string TorchSharpVersion => typeof(torch).Assembly.GetName().Version!.ToString(3);

    /// <summary>This platform's runtime identifier as TorchSharp's packages name it.</summary>
    internal static string Rid =>
        (OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux") + "-"
        + RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();

    /// <summary>The file names of libtorch and of TorchSharp's glue library on this platform.</summary>
    internal static (string Torch, string Glue) FileNames =>
        OperatingSystem.IsWindows() ? ("torch.dll", "LibTorchSharp.dll")
        : OperatingSystem.IsMacOS() ? ("libtorch.dylib", "libLibTorchSharp.dylib")
        : ("libtorch.so", "libLibTorchSharp.so");

    /// <summary>NuGet's global packages folder: <c>NUGET_PACKAGES</c>, else <c>~/.nuget/packages</c>.</summary>
    internal static string PackagesRoot()
    {
        var overridden = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        return !string.IsNullOrEmpty(overridden)
            ? overridden
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
    }

    /// <summary>The folders holding the glue library and libtorch, restoring the packages first when needed.</summary>
    public static (string Glue, string Torch) Locate(Action<string>? note)
    {
        var root = PackagesRoot();
        var glue = Path.Combine(root, "torchsharp", TorchSharpVersion, "runtimes", Rid, "native");
        var torchPackage = $"libtorch-cpu-{Rid}";
        var torch = Path.Combine(root, torchPackage, LibTorchVersion, "runtimes", Rid, "native");
        var (torchFile, glueFile) = FileNames;
        if (File.Exists(Path.Combine(glue, glueFile)) && File.Exists(Path.Combine(torch, torchFile)))
        {
            return (glue, torch);
        }

        note?.Invoke($"libtorch is not beside dotnet-quant; restoring TorchSharp {TorchSharpVersion} and {torchPackage} {LibTorchVersion} from NuGet into {root} (once per machine, several hundred MB).");
        Restore(root, [("TorchSharp", TorchSharpVersion), (torchPackage, LibTorchVersion)]);
        if (!File.Exists(Path.Combine(glue, glueFile)) || !File.Exists(Path.Combine(torch, torchFile)))
        {
            throw new QuantException(ErrorCode.TorchUnavailable,
                $"After restoring, {Path.Combine(torch, torchFile)} or {Path.Combine(glue, glueFile)} is still missing. "
                + "TorchSharp's CPU build may not exist for this platform.");
        }

        return (glue, torch);
    }

    private static void Restore(string root, (string Id, string Version)[] packages)
    {
        var folder = Path.Combine(Path.GetTempPath(), "quanttasks-native-restore", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            var project = new StringBuilder();
            project.Append("<Project Sdk=\"Microsoft.NET.Sdk\">\n  <PropertyGroup>\n    <TargetFramework>net10.0</TargetFramework>\n");
            project.Append("    <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>\n  </PropertyGroup>\n  <ItemGroup>\n");
            foreach (var (id, version) in packages)
            {
                project.Append(CultureInfo.InvariantCulture, $"    <PackageDownload Include=\"{id}\" Version=\"[{version}]\" />\n");
            }

            project.Append("  </ItemGroup>\n</Project>\n");
            var path = Path.Combine(folder, "restore.csproj");
            File.WriteAllText(path, project.ToString());

            // Run from the user's current folder so that its nuget.config (and the user's) choose the sources.
            var start = new ProcessStartInfo(DotNetHost(), ["restore", path, $"-p:RestorePackagesPath={root}", "-nologo"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = Environment.CurrentDirectory,
            };
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync();
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                throw new QuantException(ErrorCode.TorchUnavailable,
                    $"Restoring libtorch from NuGet failed (dotnet restore exited with {process.ExitCode}); check that your NuGet sources serve "
                    + string.Join(" and ", packages.Select(p => $"{p.Id} {p.Version}")) + $". Output: {output}{error.Result}");
            }
        }
        finally
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
                // A temporary folder; the system cleans it.
            }
        }
    }

    /// <summary>The dotnet host running this process, else the one on PATH.</summary>
    private static string DotNetHost()
    {
        var fromCli = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(fromCli) && File.Exists(fromCli))
        {
            return fromCli;
        }

        // The runtime lives in {dotnet root}/shared/Microsoft.NETCore.App/{version}/.
        var runtime = RuntimeEnvironment.GetRuntimeDirectory();
        var candidate = Path.GetFullPath(Path.Combine(runtime, "..", "..", "..", OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet"));
        return File.Exists(candidate) ? candidate : "dotnet";
    }
}
