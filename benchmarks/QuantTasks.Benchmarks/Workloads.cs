using QuantTasks.Blob;
using QuantTasks.Onnx;
using QuantTasks.Quantization;
using QuantTasks.Weights;

namespace QuantTasks.Benchmarks;

/// <summary>The models and symbol streams the benchmarks share: the fixtures' MLP and LeNet-5, uniform per channel.</summary>
internal static class Workloads
{
    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    public static OnnxModel Load(string file) => OnnxModel.Load(Fixture(file));

    public static QuantizedTensor[] Quantize(OnnxModel model, int bits) =>
        WeightCatalog.Find(model).Select(w => UniformQuantizer.Quantize(
            w.Name, model.ReadFloats(model.FindTensor(w.Name)!), w.Shape, bits, w.OutputChannelAxis, symmetric: false)).ToArray();

    public static byte[] Blob(OnnxModel model, int bits) =>
        BlobWriter.Write(model, Quantize(model, bits).Select(q => StoredTensor.Of(q, 1)).ToArray(), new byte[32],
            new Dictionary<string, string>(), entropy: true).Bytes;
}
