using QuantTasks.Diagnostics;
using QuantTasks.Engine.Hessian;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Engine.Tests.Hessian;

/// <summary>The whole analysis on real models: pretrained converters' output, label-free, and bad requests.</summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class SensitivityAnalysisTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    /// <summary>
    /// PP-OCRv4's recognizer (paddle2onnx, opset 9, weights in Constant nodes; Conv+BatchNormalization,
    /// HardSigmoid, Clip, Concat, Reshape, Transpose, MatMul, Softmax) has no labels to offer: the loss is the KL
    /// divergence from its own output, whose Hessian at the float weights is a Fisher matrix, so every block is
    /// positive semi-definite and its top eigenvalue cannot be negative.
    /// </summary>
    [Fact]
    public void A_pretrained_OCR_model_goes_through_analysis_label_free()
    {
        var modelPath = Fixtures.Model("ppocr/ch_PP-OCRv4_rec_infer.onnx");
        var model = OnnxModel.Load(modelPath);
        var catalog = WeightCatalog.Find(model);
        Assert.True(model.Graph.Initializer.Count == 0 && catalog.Count > 40, "the weights live in Constant nodes");
        var data = Images(samples: 2, width: 48);
        var notes = new List<string>();

        var report = SensitivityAnalysis.Run(modelPath, data,
            new AnalysisOptions(AnalysisMethod.Both, LossKind.Auto, Samples: 2, BatchSize: 2, MaxIterations: 3, Tolerance: 0.01),
            note: notes.Add);

        Assert.Equal("kl", report.Loss);
        Assert.Equal(2, report.Samples);
        Assert.Equal("cpu", report.Device);
        Assert.Contains(notes, n => n.Contains("CPU", StringComparison.Ordinal));
        Assert.Equal(catalog.Select(w => w.Name), report.Tensors.Select(t => t.Name));
        Assert.All(report.Tensors, t =>
        {
            Assert.True(double.IsFinite(t.Trace!.Value), t.Name);
            Assert.True(t.TopEigenvalue >= -1e-6 * Math.Abs(t.Trace.Value) - 1e-9, $"{t.Name}: {t.TopEigenvalue}");
            Assert.Equal(t.Params, t.Diagonal!.Length);
            Assert.Equal(t.Trace.Value / t.Params, t.Sensitivity, 12);
        });
        Assert.Contains(report.Tensors, t => t.TopEigenvalue > 0);
    }

    [Fact]
    public void Cross_entropy_without_labels_is_an_error_naming_the_file()
    {
        var data = Images(samples: 2, width: 192);
        var error = Assert.Throws<QuantException>(() => SensitivityAnalysis.Run(Fixtures.Model("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx"), data,
            new AnalysisOptions(AnalysisMethod.Trace, LossKind.CrossEntropy, Samples: 2, MaxIterations: 1)));
        Assert.Equal(ErrorCode.DataMissingArray, error.Code);
        Assert.Contains("images.npz", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cuda_on_a_machine_without_it_is_an_error_and_auto_falls_back()
    {
        var options = new AnalysisOptions(AnalysisMethod.Trace, Samples: 8, MaxIterations: 2, Device: DeviceKind.Cuda);
        var error = Assert.Throws<QuantException>(() => SensitivityAnalysis.Run(Fixtures.Model("mlp.onnx"), Fixtures.Data("digits-calibration.npz"), options));
        Assert.Equal(ErrorCode.CudaUnavailable, error.Code);
    }

    [Fact]
    public void An_unknown_logits_output_is_an_error_listing_the_outputs()
    {
        var options = new AnalysisOptions(AnalysisMethod.Trace, Samples: 8, MaxIterations: 2, Output: "probabilities");
        var error = Assert.Throws<QuantException>(() => SensitivityAnalysis.Run(Fixtures.Model("mlp.onnx"), Fixtures.Data("digits-calibration.npz"), options));
        Assert.Contains("probabilities", error.Message, StringComparison.Ordinal);
    }

    /// <summary>Deterministic pseudo-images in [0, 1), N x 3 x 48 x width, without labels.</summary>
    private string Images(int samples, int width)
    {
        var random = new Random(3);
        var values = Enumerable.Range(0, samples * 3 * 48 * width).Select(_ => (float)random.NextDouble()).ToArray();
        var path = _folder.File("images.npz");
        NpzWriter.Write(path, ("x", NpzWriter.Floats([samples, 3, 48, width], values)));
        return path;
    }
}
