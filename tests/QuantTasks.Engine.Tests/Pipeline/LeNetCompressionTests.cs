using QuantTasks.Engine.Pipeline;
using QuantTasks.Policy;
using QuantTasks.Runtime;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Pipeline;

/// <summary>
/// The search's acceptance case: PyTorch's LeNet-5 (97.40% top-1) at 16x or more, losing at most 0.5 pp on the
/// 2,000 held-out digits, measured by ONNX Runtime on the decoded blob, without fine-tuning. ECSQ, the search choosing
/// each tensor's bits and sparsity, Omega measured as each candidate's loss increase on the calibration digits.
/// </summary>
public sealed class LeNetCompressionTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Theory]
    [InlineData("[3, 4]")]
    [InlineData("[2, 3, 4, 5, 6]")]
    public void LeNet_reaches_16x_losing_at_most_half_a_point(string bits)
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "calibration.npz");
        _folder.Copy(Fixtures.Data("digits-test.npz"), "test.npz");
        File.WriteAllText(_folder.File("quant.yaml"), $"""
            version: 1
            models:
              - path: lenet5.onnx
                name: LeNet
            data:
              calibration: calibration.npz
              evaluation: test.npz
            sensitivity:
              method: none
            quantization:
              method: ecsq
              granularity: per-tensor
              bits: {bits}
              omega: measured
              budget:
                compression_ratio: 16
            pruning:
              candidates: [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
            accuracy:
              max_drop: 0.5
            """);

        var result = new QuantizationPipeline().Run(PolicyLoader.Load(_folder.File("quant.yaml")), new PipelineOptions(_folder.File("out"), "Tests"));

        var model = Assert.Single(result.Models).Report;
        Assert.True(model.CompressionRatio >= 16, $"{model.CompressionRatio:0.00}x");
        Assert.Equal(QuantBlob.Read(File.ReadAllBytes(Assert.Single(result.Models).BlobPath)).PayloadLength, model.CompressedBytes);
        Assert.Equal(2000, model.Accuracy!.Samples);
        Assert.Equal(97.40, model.Accuracy.Baseline, 2);
        Assert.True(model.Accuracy.Drop <= 0.5, $"lost {model.Accuracy.Drop:0.00} pp");
        Assert.Empty(result.GateFailures);
    }
}
