using Google.Protobuf;
using QuantTasks.Blob;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Quantization;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Runtime.Tests;

/// <summary>Small models and blobs built in code, for tests that must try every byte of a blob.</summary>
internal static class TinyModels
{
    /// <summary>y = MatMul(Gemm(x, W1, transB=1) + b, W2) with W1 in an initializer and W2 in a Constant node.</summary>
    public static OnnxModel TwoLayer(TempFolder folder)
    {
        var random = new Random(3);
        TensorProto Tensor(string name, params long[] dims)
        {
            var count = (int)dims.Aggregate(1L, (a, b) => a * b);
            var values = Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
            var bytes = new byte[count * 4];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            return new TensorProto { Name = name, DataType = 1, Dims = { dims }, RawData = ByteString.CopyFrom(bytes) };
        }

        ValueInfoProto Value(string name, params long[] dims) => new()
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto { Dim = { dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }) } } } },
        };

        var graph = new GraphProto
        {
            Name = "tiny",
            Initializer = { Tensor("w1", 3, 4), Tensor("b1", 3) },
            Input = { Value("x", 2, 4) },
            Output = { Value("y", 2, 2) },
            Node =
            {
                new NodeProto { OpType = "Constant", Output = { "w2" }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = Tensor("w2", 3, 2) } } },
                new NodeProto { OpType = "Gemm", Input = { "x", "w1", "b1" }, Output = { "h" }, Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } },
                new NodeProto { OpType = "MatMul", Input = { "h", "w2" }, Output = { "y" } },
            },
        };
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 17 } } };
        var path = folder.File("tiny.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        return OnnxModel.Load(path);
    }

    /// <summary>A blob of <see cref="TwoLayer"/>: w1 at 2 bits per channel, w2 kept in float.</summary>
    public static byte[] TwoLayerBlob(TempFolder folder)
    {
        var model = TwoLayer(folder);
        var weights = WeightCatalog.Find(model);
        var w1 = weights.Single(w => w.Name == "w1");
        var w2 = weights.Single(w => w.Name == "w2");
        var quantized = UniformQuantizer.Quantize("w1", model.ReadFloats(model.FindTensor("w1")!), w1.Shape, 2, w1.OutputChannelAxis, symmetric: false);
        var stored = new[]
        {
            StoredTensor.Of(quantized, 1),
            StoredTensor.KeptInFloat("w2", w2.Shape, 1, model.ReadFloats(model.FindTensor("w2")!)),
        };
        var metadata = new Dictionary<string, string> { ["model"] = "Tiny" };
        return BlobWriter.Write(model, stored, new byte[32], metadata, entropy: true).Bytes;
    }
}
