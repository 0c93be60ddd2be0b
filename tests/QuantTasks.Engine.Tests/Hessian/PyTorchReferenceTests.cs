using System.Text.Json;
using QuantTasks.Engine.Hessian;
using QuantTasks.Policy;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Hessian;

/// <summary>
/// The acceptance setting of the analysis (both estimators, up to 1,000 probes or power iterations, tolerance
/// 0.001) on the PyTorch-exported LeNet-5 and MLP, against per-tensor figures PyTorch computed independently over
/// the same 512 calibration digits (tests/fixtures/generator/hessian_reference.py: exact traces for small blocks,
/// 1,000 block-restricted Rademacher probes otherwise, power iteration to 1e-6).
/// </summary>
/// <remarks>
/// The slowest tests of the suite (LeNet-5 about 5 minutes, the MLP about 1 minute on two cores): the long setting
/// is the point, because the tolerance decides how close the estimate gets and thousands of Hessian-vector
/// products are what once exposed a native crash.
/// </remarks>
[Collection(LibTorchTestGroup.Name)]
public sealed class PyTorchReferenceTests
{
    private const double RelativeTolerance = 0.10;

    [Theory]
    [InlineData("mlp.onnx")]
    [InlineData("lenet5.onnx")]
    public void Trace_and_top_eigenvalue_agree_with_PyTorch_within_10_percent(string model)
    {
        var reference = ReadReference(model);
        var report = SensitivityAnalysis.Run(Fixtures.Model(model), Fixtures.Data("digits-calibration.npz"),
            new AnalysisOptions(AnalysisMethod.Both, LossKind.CrossEntropy, Samples: 512, BatchSize: 64, MaxIterations: 1000, Tolerance: 0.001));

        Assert.Equal("cross-entropy", report.Loss);
        Assert.Equal(512, report.Samples);
        Assert.Equal(reference.Keys.Order(StringComparer.Ordinal), report.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
        var misses = new List<string>();
        foreach (var tensor in report.Tensors)
        {
            var (trace, eigenvalue) = reference[tensor.Name];
            Check(misses, $"{tensor.Name} trace", tensor.Trace!.Value, trace);
            Check(misses, $"{tensor.Name} top eigenvalue", tensor.TopEigenvalue!.Value, eigenvalue);
        }

        Assert.True(misses.Count == 0, string.Join("; ", misses));
    }

    private static void Check(List<string> misses, string what, double ours, double theirs)
    {
        var relative = Math.Abs(ours - theirs) / Math.Abs(theirs);
        if (!(relative <= RelativeTolerance))
        {
            misses.Add($"{what}: {ours:G5} against PyTorch's {theirs:G5} ({relative:P1} apart)");
        }
    }

    private static Dictionary<string, (double Trace, double Eigenvalue)> ReadReference(string model)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Fixtures.Data("hessian-reference.json")));
        return json.RootElement.GetProperty(model).EnumerateObject().ToDictionary(
            p => p.Name,
            p => (p.Value.GetProperty("trace").GetDouble(), p.Value.GetProperty("top_eigenvalue").GetDouble()),
            StringComparer.Ordinal);
    }
}
