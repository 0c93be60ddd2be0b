using System.Text.Json.Nodes;
using QuantTasks.Engine.Pipeline;
using QuantTasks.Policy;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Pipeline;

/// <summary>
/// The Hessian Omega's bit choices do not depend on the analysis's probe seed (issue 14: with Hutchinson's
/// estimator alone, seeds flipped choices on LeNet-5): HAWQ's trace sensitivity, uniform per-channel levels, 16x.
/// </summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class SeedStabilityTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Analysis_seeds_0_1_and_2_give_LeNet_the_same_choices_at_16x()
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "calibration.npz");

        var choices = new[] { 0, 1, 2 }.Select(Choices).ToArray();

        Assert.Equal(choices[0], choices[1]);
        Assert.Equal(choices[0], choices[2]);
        Assert.Equal(5, choices[0].Split(',').Length);
    }

    // Each tensor's bits and sparsity, as report.json gives them.
    private string Choices(int seed)
    {
        File.WriteAllText(_folder.File("quant.yaml"), $"""
            version: 1
            models:
              - path: lenet5.onnx
            data:
              calibration: calibration.npz
            sensitivity:
              method: trace
              samples: 256
              seed: {seed}
            quantization:
              method: uniform
              granularity: per-channel
              bits: [2, 3, 4, 5, 6, 8]
              omega: sensitivity
              compensation: none
              budget:
                compression_ratio: 16
            """);
        var output = _folder.File("out-" + seed);
        new QuantizationPipeline().Run(PolicyLoader.Load(_folder.File("quant.yaml")), new PipelineOptions(output, "Tests"));
        var tensors = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["models"]![0]!["tensors"]!.AsArray();
        return string.Join(",", tensors.Select(t => $"{t!["name"]}:{t["bits"]}:{t["sparsity"]}"));
    }
}
