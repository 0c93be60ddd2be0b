using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using QuantTasks.Engine.Pipeline;
using QuantTasks.Policy;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Pipeline;

/// <summary>
/// Refactoring guard: the blob, the generated loader and report.json of a set of policies (the sample's, the pipeline
/// tests', and one per quantizer, granularity, search and pruning mode) hash to the values recorded in
/// <c>fixtures/data/golden-outputs.json</c>. What may legitimately differ between runs and folders is masked first:
/// the content hash (it includes the engine's own assembly bytes, so any code change moves it), timings, and absolute
/// paths. Set QUANTTASKS_RECORD_GOLDEN to a file path to write the current hashes there instead of comparing.
/// </summary>
[Collection(LibTorchTestGroup.Name)]
public sealed partial class GoldenOutputTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    public static TheoryData<string> Cases => [.. Policies.Keys];

    // Policies with calibration data name omega and compensation and turn the joint check off, and those with an
    // analysis name its sketch (0, for Hutchinson's estimator): the hashes were recorded when these were the
    // defaults, and a default's change must not move a refactoring guard.
    private static readonly Dictionary<string, string> Policies = new(StringComparer.Ordinal)
    {
        // The sample app's policy until it took up fine-tuning (k-means per channel, 12x, trace analysis): its
        // hashes were recorded on both CPU families CI runs on. The sample's current policy fine-tunes, whose
        // low bits differ between those families; the sample project's own test holds its ratio and accuracy.
        ["mlp-kmeans-trace-12x"] = """
            version: 1
            models:
              - path: models/digits.onnx
                name: Digits
            data:
              calibration: data/digits-calibration.npz
              evaluation: data/digits-eval.npz
            sensitivity:
              method: trace
              sketch: 0
            quantization:
              method: kmeans
              granularity: per-channel
              bits: [2, 3, 4, 5, 6]
              omega: sensitivity
              compensation: none
              joint_check:
                enabled: false
              budget:
                compression_ratio: 12
            encoding:
              entropy: huffman
            accuracy:
              metric: top1
              max_drop: 0.5
            """,
        ["mlp-uniform-4"] = Mlp("quantization:\n  granularity: per-channel\n  bits: [4]\n  budget:\n    average_bits: 5\n", maxDrop: 1),
        ["mlp-uniform-3"] = Mlp("quantization:\n  granularity: per-channel\n  bits: [3]\n  budget:\n    average_bits: 4\n", maxDrop: 100),
        ["mlp-gate-fails"] = Mlp("quantization:\n  granularity: per-channel\n  bits: [1]\n  budget:\n    average_bits: 2\n", maxDrop: 0.1),
        ["mlp-kmeans-global-greedy"] = Mlp("""
            quantization:
              method: kmeans
              granularity: per-tensor
              bits: [2, 3, 4]
              search: greedy
              budget:
                compression_ratio: 10
            pruning:
              sparsity: 0.5
              scope: global

            """, maxDrop: 100),
        ["mlp-symmetric-overrides"] = Mlp("""
            quantization:
              granularity: per-channel
              scheme: symmetric
              bits: [3, 5, 8]
              keep_float: ["*bias*", "fc2.weight"]
              overrides:
                - match: fc3.weight
                  bits: 8
              budget:
                compression_ratio: 3
            encoding:
              entropy: none

            """, maxDrop: 100),
        ["lenet-ecsq-measured-34"] = LeNet("""
            sensitivity:
              method: none
            quantization:
              method: ecsq
              granularity: per-tensor
              bits: [3, 4]
              omega: measured
              compensation: none
              joint_check:
                enabled: false
              budget:
                compression_ratio: 16
            pruning:
              candidates: [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9]

            """),
        ["lenet-ecsq-measured-2to6"] = LeNet("""
            sensitivity:
              method: none
            quantization:
              method: ecsq
              granularity: per-tensor
              bits: [2, 3, 4, 5, 6]
              omega: measured
              compensation: none
              joint_check:
                enabled: false
              budget:
                compression_ratio: 16
            pruning:
              candidates: [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9]

            """),
        ["lenet-hessian-kmeans-diagonal"] = LeNet("""
            sensitivity:
              method: trace
              sketch: 0
              samples: 64
              max_iterations: 20
            quantization:
              method: hessian-kmeans
              granularity: per-channel
              bits: [2, 3, 4]
              omega: hessian-diagonal
              compensation: none
              joint_check:
                enabled: false
              budget:
                compression_ratio: 12
            pruning:
              candidates: [0, 0.5]

            """),
        ["lenet-ecsq-uniform-eigenvalue"] = LeNet("""
            sensitivity:
              method: eigenvalue
              sketch: 0
              samples: 64
              max_iterations: 20
            quantization:
              method: ecsq
              granularity: per-channel
              ecsq:
                algorithm: uniform
                lambda: 0.01
              bits: [2, 3, 4]
              omega: sensitivity
              compensation: none
              joint_check:
                enabled: false
              budget:
                max_size: 20KB

            """),
    };

    private static string SampleFolder => Path.Combine(AppContext.BaseDirectory, "sample-project");

    [Theory]
    [MemberData(nameof(Cases))]
    public void Outputs_match_the_recorded_hashes(string name)
    {
        var hashes = Run(name);

        var record = Environment.GetEnvironmentVariable("QUANTTASKS_RECORD_GOLDEN");
        if (!string.IsNullOrEmpty(record))
        {
            lock (Policies)
            {
                // Recording adds this machine's hashes to those already accepted (see Accepted).
                var all = File.Exists(record) ? JsonNode.Parse(File.ReadAllText(record))!.AsObject() : [];
                var entry = all[name] as JsonObject ?? [];
                foreach (var (output, hash) in hashes)
                {
                    var accepted = Accepted(entry, output);
                    if (!accepted.Contains(hash))
                    {
                        accepted.Add(hash);
                    }

                    entry[output] = JsonSerializer.SerializeToNode(accepted);
                }

                all[name] = entry.DeepClone();
                File.WriteAllText(record, all.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            }

            return;
        }

        var golden = JsonNode.Parse(File.ReadAllText(Fixtures.Data("golden-outputs.json")))![name]!.AsObject();
        Assert.Contains(hashes["blob"], Accepted(golden, "blob"));
        Assert.Contains(hashes["code"], Accepted(golden, "code"));
        Assert.Contains(hashes["report"], Accepted(golden, "report"));
    }

    /// <summary>
    /// The hashes accepted for one output: one per CPU family the suite was recorded on. The policies whose
    /// analysis runs in libtorch get different low bits from its kernels on CPUs with and without AVX-512, and
    /// those bits reach the rounding; everything else has one hash everywhere.
    /// </summary>
    private static List<string> Accepted(JsonObject entry, string output) => entry[output] switch
    {
        JsonArray list => list.Select(h => h!.GetValue<string>()).ToList(),
        JsonValue single => [single.GetValue<string>()],
        _ => [],
    };

    private Dictionary<string, string> Run(string name)
    {
        foreach (var file in new[] { "models/digits.onnx", "data/digits-calibration.npz", "data/digits-eval.npz", "data/digits-train.npz" })
        {
            Directory.CreateDirectory(Path.GetDirectoryName(_folder.File(file))!);
            File.Copy(Path.Combine(SampleFolder, file), _folder.File(file), overwrite: true);
        }

        _folder.Copy(Fixtures.Model("mlp.onnx"));
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        _folder.Copy(Fixtures.Data("digits-test.npz"), "test.npz");
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "calibration.npz");
        File.WriteAllText(_folder.File("quant.yaml"), Policies[name]);

        var result = new QuantizationPipeline().Run(PolicyLoader.Load(_folder.File("quant.yaml")), new PipelineOptions(_folder.File("out"), "Golden"));

        var model = Assert.Single(result.Models);
        var blob = File.ReadAllBytes(model.BlobPath);
        blob.AsSpan(24, 36).Clear(); // content hash and the header CRC that covers it
        var code = ContentHashLiteral().Replace(File.ReadAllText(model.CodePath), "contentHash: \"\"");
        var report = JsonNode.Parse(File.ReadAllText(_folder.File("out/report.json")))!;
        foreach (var entry in report["models"]!.AsArray())
        {
            foreach (var key in new[] { "content_hash", "seconds", "stages", "source", "blob" })
            {
                entry!.AsObject().Remove(key);
            }
        }

        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["blob"] = Sha256(blob),
            ["code"] = Sha256(Encoding.UTF8.GetBytes(code)),
            ["report"] = Sha256(Encoding.UTF8.GetBytes(report.ToJsonString())),
        };
    }

    private static string Mlp(string sections, double maxDrop) => """
        version: 1
        models:
          - path: mlp.onnx
            name: Digits
        data:
          evaluation: test.npz
        sensitivity:
          method: none

        """ + sections + "accuracy:\n  max_drop: " + maxDrop.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n";

    private static string LeNet(string sections) => """
        version: 1
        models:
          - path: lenet5.onnx
            name: LeNet
        data:
          calibration: calibration.npz
          evaluation: test.npz

        """ + sections + "accuracy:\n  max_drop: 100\n";

    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    [GeneratedRegex("contentHash: \"[0-9a-f]*\"")]
    private static partial Regex ContentHashLiteral();
}
