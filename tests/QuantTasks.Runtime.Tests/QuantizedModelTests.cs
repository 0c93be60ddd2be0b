using Microsoft.ML.OnnxRuntime;
using QuantTasks.Blob;
using QuantTasks.Data;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Quantization;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Runtime.Tests;

public class QuantizedModelTests
{
    [Fact]
    public void A_4_bit_MLP_runs_within_1_pp_of_the_float_model_and_the_session_equals_the_decoded_model()
    {
        var model = OnnxModel.Load(Fixtures.Model("mlp.onnx"));
        var blob = UniformBlob(model, bits: 4);
        var data = DataFile.Load(Fixtures.Data("digits-test.npz"));
        var labels = data.Labels()!;

        var decoded = QuantBlob.Read(blob).DecodeOnnxModel();
        var floatTop1 = ModelEvaluator.Top1(ModelEvaluator.Run(model.ToBytes(), data, null, "mlp.onnx"), labels);
        var quantizedTop1 = ModelEvaluator.Top1(ModelEvaluator.Run(decoded, data, null, "decoded"), labels);

        Assert.InRange(floatTop1 - quantizedTop1, -1.0, 1.0);
        using var session = QuantizedModel.CreateSession(blob);
        using var reference = new InferenceSession(decoded);
        Assert.Equal(Run(reference), Run(session));
    }

    [Theory]
    [InlineData("lenet5-constants.onnx")]
    [InlineData("lenet5-fp16.onnx")]
    [InlineData("lenet5-typed.onnx")]
    [InlineData("lenet5-opset9.onnx")]
    public void Blobs_of_every_weight_layout_run_close_to_the_float_model(string file)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));
        var blob = UniformBlob(model, bits: 8);

        using var quantized = QuantizedModel.CreateSession(blob);
        using var original = new InferenceSession(model.ToBytes());

        var expected = Run(original);
        var actual = Run(quantized);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i], actual[i], 0.25);
        }
    }

    [Fact]
    public void Decoded_weights_equal_the_quantizers_reconstruction_bit_for_bit()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var weight = WeightCatalog.Find(model).Single(w => w.Name == "conv2.weight");
        var quantized = UniformQuantizer.Quantize(weight.Name, model.ReadFloats(model.FindTensor(weight.Name)!), weight.Shape, 3, weight.OutputChannelAxis, symmetric: true);
        var blob = BlobWriter.Write(model, [StoredTensor.Of(quantized, 1)], new byte[32], new Dictionary<string, string>(), entropy: true);

        Assert.Equal(quantized.Dequantize(), QuantBlob.Read(blob.Bytes).DecodeFloats("conv2.weight"));
    }

    [Fact]
    public void Sessions_load_from_streams_and_from_a_file_beside_the_app_when_no_resource_is_embedded()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var blob = UniformBlob(model, bits: 4);
        var file = $"test-{Guid.NewGuid():N}.qtblob";
        File.WriteAllBytes(Path.Combine(AppContext.BaseDirectory, file), blob);
        try
        {
            using var fromStream = QuantizedModel.CreateSession(new MemoryStream(blob));
            using var fromFile = QuantizedModel.CreateSession(typeof(QuantizedModelTests).Assembly, "No.Such.Resource", file);
            Assert.Equal(Run(fromStream), Run(fromFile));
        }
        finally
        {
            File.Delete(Path.Combine(AppContext.BaseDirectory, file));
        }

        var missing = Assert.Throws<QuantBlobException>(() =>
            QuantizedModel.CreateSession(typeof(QuantizedModelTests).Assembly, "No.Such.Resource", "absent.qtblob"));
        Assert.Contains("No.Such.Resource", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_same_inputs_give_byte_identical_blobs()
    {
        var first = UniformBlob(OnnxModel.Load(Fixtures.Model("lenet5.onnx")), bits: 3);
        var second = UniformBlob(OnnxModel.Load(Fixtures.Model("lenet5.onnx")), bits: 3);

        Assert.Equal(first, second);
    }

    internal static byte[] UniformBlob(OnnxModel model, int bits)
    {
        var stored = WeightCatalog.Find(model).Select(w => StoredTensor.Of(
            UniformQuantizer.Quantize(w.Name, model.ReadFloats(model.FindTensor(w.Name)!), w.Shape, bits, w.OutputChannelAxis, symmetric: false),
            w.DataType)).ToArray();
        return BlobWriter.Write(model, stored, new byte[32], new Dictionary<string, string> { ["model"] = "Test" }, entropy: true).Bytes;
    }

    private static float[] Run(InferenceSession session)
    {
        var digits = DataFile.Load(Fixtures.Data("digits-test.npz")).Get("input").Floats!.AsSpan(0, 64 * 784).ToArray();
        using var input = OrtValue.CreateTensorValueFromMemory(digits, [64, 1, 28, 28]);
        using var options = new RunOptions();
        using var outputs = session.Run(options, session.InputNames, [input], session.OutputNames);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }
}
