using System.Xml.Linq;

namespace QuantTasks.Build.Tests.Tasks;

public sealed class EngineDependenciesTests
{
    private const string DepsJson = """
        {
          "targets": { ".NETCoreApp,Version=v10.0": {} },
          "libraries": {
            "dotnet-quant/0.1.0": { "type": "project", "serviceable": false, "sha512": "" },
            "TorchSharp/0.107.0": { "type": "package", "serviceable": true, "sha512": "sha512-x", "path": "torchsharp/0.107.0" },
            "libtorch-cpu-linux-x64/2.10.0": { "type": "package", "serviceable": true, "sha512": "sha512-y", "path": "libtorch-cpu-linux-x64/2.10.0" },
            "libtorch-cpu-win-x64/2.10.0": { "type": "package", "serviceable": true, "sha512": "sha512-z", "path": "libtorch-cpu-win-x64/2.10.0" },
            "libtorch-cpu-osx-arm64/2.10.0": { "type": "package", "serviceable": true, "sha512": "sha512-w", "path": "libtorch-cpu-osx-arm64/2.10.0" },
            "YamlDotNet/18.1.0": { "type": "package", "serviceable": true, "sha512": "sha512-v", "path": "yamldotnet/18.1.0" },
            "QuantTasks.Core/0.1.0": { "type": "project", "serviceable": false, "sha512": "" }
          }
        }
        """;

    [Theory]
    [InlineData("linux-x64", "libtorch-cpu-linux-x64")]
    [InlineData("win-x64", "libtorch-cpu-win-x64")]
    [InlineData("osx-arm64", "libtorch-cpu-osx-arm64")]
    public void Every_package_of_the_deps_file_is_needed_except_other_platforms_native_ones(string platform, string libtorch)
    {
        var packages = EngineDependencies.Packages(DepsJson, platform);

        Assert.Equal([("TorchSharp", "0.107.0"), (libtorch, "2.10.0"), ("YamlDotNet", "18.1.0")], packages);
    }

    [Fact]
    public void The_restore_project_downloads_exact_versions_and_imports_nothing_from_the_consumers_folders()
    {
        var project = XDocument.Parse(EngineDependencies.RestoreProject([("TorchSharp", "0.107.0"), ("libtorch-cpu-linux-x64", "2.10.0")]));

        var downloads = project.Descendants("PackageDownload").Select(d => (d.Attribute("Include")!.Value, d.Attribute("Version")!.Value));
        Assert.Equal([("TorchSharp", "[0.107.0]"), ("libtorch-cpu-linux-x64", "[2.10.0]")], downloads);
        Assert.Equal("false", project.Descendants("ImportDirectoryBuildProps").Single().Value);
        Assert.Equal("false", project.Descendants("ImportDirectoryPackagesProps").Single().Value);
        Assert.Empty(project.Descendants("PackageReference"));
    }

    [Fact]
    public void The_host_platform_is_a_runtime_identifier()
    {
        Assert.Matches("^(linux|win|osx)-(x64|x86|arm64)$", EngineDependencies.HostPlatform());
    }
}
