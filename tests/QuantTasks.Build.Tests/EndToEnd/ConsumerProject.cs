using System.Text.Json;
using QuantTasks.Tests;

namespace QuantTasks.Build.Tests.EndToEnd;

/// <summary>
/// A console app outside the repository that references the QuantTasks package from the local feed, with the
/// test fixtures' MNIST MLP as its model: what a user creates with `dotnet new console` and `dotnet add package`.
/// </summary>
internal sealed class ConsumerProject : IDisposable
{
    public const string Name = "Consumer";

    private readonly PackageFeed _feed;

    /// <param name="feed">The local feed.</param>
    /// <param name="cacheFolder">The content cache, or null for one inside the project.</param>
    /// <param name="usesModel">Whether Program.cs opens the compressed model.</param>
    /// <param name="nativeOnnxRuntime">Whether the app references ONNX Runtime's native package (or, as users who
    /// add only QuantTasks and QuantTasks.Runtime do, only the managed API that comes with them).</param>
    public ConsumerProject(PackageFeed feed, string? cacheFolder = null, bool usesModel = true, bool nativeOnnxRuntime = true)
    {
        _feed = feed;
        Folder = Path.Combine(Path.GetTempPath(), "quanttasks-tests", "consumer-" + Guid.NewGuid().ToString("N"));
        CacheFolder = cacheFolder ?? Path.Combine(Folder, "quant-cache");
        Directory.CreateDirectory(Path.Combine(Folder, "models"));
        Directory.CreateDirectory(Path.Combine(Folder, "data"));
        File.Copy(Fixtures.Model("mlp.onnx"), Path.Combine(Folder, "models", "digits.onnx"));
        File.Copy(Fixtures.Data("digits-calibration.npz"), Path.Combine(Folder, "data", "calibration.npz"));
        File.Copy(Fixtures.Data("digits-test.npz"), Path.Combine(Folder, "data", "test.npz"));

        // Our feed added to the machine's own sources (no <clear/>), which serve ONNX Runtime and TorchSharp.
        File.WriteAllText(Path.Combine(Folder, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="quanttasks-e2e" value="{feed.Folder}" />
              </packageSources>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(Folder, $"{Name}.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <RootNamespace>{Name}</RootNamespace>
                <QuantCacheDirectory>{CacheFolder}</QuantCacheDirectory>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="QuantTasks" Version="{feed.Version}" />
                {(nativeOnnxRuntime
                    ? "<PackageReference Include=\"Microsoft.ML.OnnxRuntime\" Version=\"1.31.1\" />"
                    : $"<PackageReference Include=\"QuantTasks.Runtime\" Version=\"{feed.Version}\" />")}
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(Folder, "Program.cs"), !usesModel ? "Console.WriteLine(\"no model\");\n" : """
            using Consumer.Models;
            using Microsoft.ML.OnnxRuntime;
            using Microsoft.ML.OnnxRuntime.Tensors;

            using var session = DigitsModel.CreateSession();
            var input = new DenseTensor<float>(new float[28 * 28], [1, 1, 28, 28]);
            using var results = session.Run([NamedOnnxValue.CreateFromTensor(session.InputMetadata.Keys.First(), input)]);
            var info = DigitsModel.Info;
            Console.WriteLine($"logits: {results[0].AsTensor<float>().Length}");
            Console.WriteLine($"compressed: {info.CompressedBytes} of {info.OriginalBytes} bytes");
            Console.WriteLine($"tensors: {string.Join(", ", info.Tensors.Select(t => $"{t.Name}={t.Bits}"))}");
            """);
    }

    public string Folder { get; }

    public string CacheFolder { get; }

    public string Policy => Path.Combine(Folder, "quant.yaml");

    public string Intermediate => Path.Combine(Folder, "obj", "Debug", "net10.0", "quant");

    /// <summary>Writes quant.yaml; the defaults analyse the Hessian (so libtorch is loaded through the package) and keep 4 bits.</summary>
    public void WritePolicy(string sensitivity = "trace", string bits = "[3, 4, 5]", double averageBits = 4, double maxDrop = 1, string model = "models/digits.onnx") =>
        File.WriteAllText(Policy, $"""
            version: 1
            models:
              - path: {model}
                name: Digits
            data:
              calibration: data/calibration.npz
              evaluation: data/test.npz
            sensitivity:
              method: {sensitivity}
              samples: 64
              max_iterations: 20
            quantization:
              method: uniform
              bits: {bits}
              budget:
                average_bits: {averageBits.ToString(System.Globalization.CultureInfo.InvariantCulture)}
            accuracy:
              metric: top1
              max_drop: {maxDrop.ToString(System.Globalization.CultureInfo.InvariantCulture)}
            """);

    public (int Exit, string Output) Build(params string[] extra) => DotNet.Build(Folder, extra);

    public (int Exit, string Output) Build(IReadOnlyDictionary<string, string> environment, params string[] extra) => DotNet.Build(Folder, environment, extra);

    /// <summary>The report of the last engine run.</summary>
    public JsonElement Report()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(Intermediate, "out", "report.json")));
        return json.RootElement.GetProperty("models")[0].Clone();
    }

    public void Dispose() => PackageFeed.TryDelete(Folder);
}
