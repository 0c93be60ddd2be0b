using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Security;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace QuantTasks.Build;

/// <summary>
/// Gets the engine's third-party packages (TorchSharp, libtorch, ONNX Runtime, YamlDotNet, ...) onto the user's
/// machine through NuGet, so that the QuantTasks package itself carries none of them. The engine's deps.json
/// lists every package with its exact version; those missing from the global packages folder are fetched by
/// restoring a generated project of <c>PackageDownload</c> items (exact versions, no dependency resolution that
/// could pick other ones), using the consuming project's NuGet configuration. The .NET host then finds them
/// through <c>--additionalprobingpath</c>. Native packages for other platforms (libtorch for Windows and macOS
/// when building on Linux, say) are left out: they are hundreds of megabytes each and never loaded.
/// </summary>
internal sealed class EngineDependencies
{
    private static readonly Regex s_packageLibrary = new(
        "\"(?<id>[^\"/]+)/(?<version>[^\"]+)\"\\s*:\\s*\\{\\s*\"type\"\\s*:\\s*\"package\"",
        RegexOptions.CultureInvariant);

    private static readonly string[] s_platforms = ["linux-x64", "linux-arm64", "linux-musl-x64", "win-x64", "win-x86", "win-arm64", "osx-x64", "osx-arm64"];

    private readonly string _depsFile;
    private readonly string _packageRoot;
    private readonly TaskLoggingHelper _log;

    public EngineDependencies(string depsFile, string packageRoot, TaskLoggingHelper log)
    {
        _depsFile = depsFile;
        _packageRoot = packageRoot;
        _log = log;
    }

    /// <summary>The packages of the deps file that this platform needs, as (id, version).</summary>
    internal static IReadOnlyList<(string Id, string Version)> Packages(string depsJson, string hostPlatform) =>
        s_packageLibrary.Matches(depsJson).Cast<Match>()
            .Select(m => (Id: m.Groups["id"].Value, Version: m.Groups["version"].Value))
            .Where(p => NeededOn(p.Id, hostPlatform))
            .Distinct()
            .ToArray();

    /// <summary>A package named for another platform (libtorch-cpu-win-x64 on Linux) is not needed here.</summary>
    internal static bool NeededOn(string id, string hostPlatform)
    {
        var lower = id.ToLowerInvariant();
        var platform = s_platforms.FirstOrDefault(p => lower.EndsWith("-" + p, StringComparison.Ordinal) || lower.EndsWith("." + p, StringComparison.Ordinal));
        return platform is null || platform == hostPlatform;
    }

    /// <summary>This machine's runtime identifier, in the form package names use.</summary>
    internal static string HostPlatform()
    {
        var os = RuntimeInformation.IsOSPlatform(OSPlatform.Windows) ? "win"
            : RuntimeInformation.IsOSPlatform(OSPlatform.OSX) ? "osx" : "linux";
        var arch = RuntimeInformation.OSArchitecture switch
        {
            Architecture.Arm64 => "arm64",
            Architecture.X86 => "x86",
            _ => "x64",
        };
        return os + "-" + arch;
    }

    /// <summary>Restores what is missing; false (with an error logged) when the restore fails.</summary>
    public bool Ensure(string dotnet, string scratchFolder)
    {
        var missing = Packages(File.ReadAllText(_depsFile), HostPlatform())
            .Where(p => !File.Exists(Path.Combine(_packageRoot, p.Id.ToLowerInvariant(), p.Version.ToLowerInvariant(), ".nupkg.metadata")))
            .ToArray();
        if (missing.Length == 0)
        {
            return true;
        }

        _log.LogMessage(MessageImportance.High,
            "QuantTasks: restoring {0} packages the engine needs (TorchSharp and libtorch among them, several hundred MB the first time) into {1}",
            missing.Length, _packageRoot);
        var folder = Path.Combine(scratchFolder, "engine-restore");
        Directory.CreateDirectory(folder);
        var project = Path.Combine(folder, "QuantTasks.EngineDependencies.proj");
        File.WriteAllText(project, RestoreProject(missing));

        var output = new StringBuilder();
        using var process = new Process
        {
            StartInfo = new ProcessStartInfo(dotnet, $"restore \"{project}\" -p:RestorePackagesPath=\"{_packageRoot.TrimEnd('/', '\\')}\" -nologo")
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = folder,
            },
        };
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(output, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            _log.LogError(null, "QT1403", null, project, 0, 0, 0, 0,
                "The packages the QuantTasks engine needs could not be restored (dotnet restore exited with {0}); check that your NuGet sources serve {1}. Output:\n{2}",
                process.ExitCode, string.Join(", ", missing.Select(m => m.Id + " " + m.Version)), output.ToString());
            return false;
        }

        return true;
    }

    /// <summary>A project that only downloads packages: no build, no imports from the consuming project's folders.</summary>
    internal static string RestoreProject(IEnumerable<(string Id, string Version)> packages)
    {
        var text = new StringBuilder();
        text.Append("<Project>\n");
        text.Append("  <PropertyGroup>\n");
        text.Append("    <ImportDirectoryBuildProps>false</ImportDirectoryBuildProps>\n");
        text.Append("    <ImportDirectoryBuildTargets>false</ImportDirectoryBuildTargets>\n");
        text.Append("    <ImportDirectoryPackagesProps>false</ImportDirectoryPackagesProps>\n");
        text.Append("  </PropertyGroup>\n");
        text.Append("  <Import Project=\"Sdk.props\" Sdk=\"Microsoft.NET.Sdk\" />\n");
        text.Append("  <PropertyGroup>\n");
        text.Append("    <TargetFramework>net10.0</TargetFramework>\n");
        text.Append("    <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>\n");
        text.Append("    <NoWarn>$(NoWarn);NU1603;NU1701</NoWarn>\n");
        text.Append("  </PropertyGroup>\n");
        text.Append("  <ItemGroup>\n");
        foreach (var (id, version) in packages)
        {
            text.Append("    <PackageDownload Include=\"").Append(SecurityElement.Escape(id)).Append("\" Version=\"[")
                .Append(SecurityElement.Escape(version)).Append("]\" />\n");
        }

        text.Append("  </ItemGroup>\n");
        text.Append("  <Import Project=\"Sdk.targets\" Sdk=\"Microsoft.NET.Sdk\" />\n");
        text.Append("</Project>\n");
        return text.ToString();
    }

    private static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (output)
        {
            output.AppendLine(line);
        }
    }
}
