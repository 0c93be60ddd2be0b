using Google.Protobuf;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;
using QuantTasks.Weights;
using DataType = QuantTasks.Onnx.Proto.TensorProto.Types.DataType;

namespace QuantTasks.Core.Tests.Weights;

public class WeightCatalogTests
{
    private static readonly (string Name, long[] Shape, long Params, string Op)[] LeNetWeights =
    [
        ("conv1.weight", [6, 1, 5, 5], 150, "Conv"),
        ("conv2.weight", [16, 6, 5, 5], 2400, "Conv"),
        ("fc1.weight", [120, 400], 48000, "Gemm"),
        ("fc2.weight", [84, 120], 10080, "Gemm"),
        ("fc3.weight", [10, 84], 840, "Gemm"),
    ];

    [Theory]
    [InlineData("lenet5.onnx", nameof(WeightStorage.Initializer))]
    [InlineData("lenet5-opset9.onnx", nameof(WeightStorage.Initializer))]
    [InlineData("lenet5-external.onnx", nameof(WeightStorage.Initializer))]
    [InlineData("lenet5-constants.onnx", nameof(WeightStorage.ConstantNode))]
    public void Finds_exactly_the_five_LeNet_weights(string file, string storageName)
    {
        var storage = Enum.Parse<WeightStorage>(storageName);
        var weights = WeightCatalog.Find(OnnxModel.Load(Fixtures.Model(file)));

        Assert.Equal(LeNetWeights.Select(w => w.Name), weights.Select(w => w.Name));
        Assert.Equal(LeNetWeights.Select(w => w.Params), weights.Select(w => w.Params));
        Assert.Equal(LeNetWeights.Select(w => w.Op), weights.Select(w => w.Op));
        Assert.Equal(LeNetWeights.Select(w => w.Shape), weights.Select(w => w.Shape.ToArray()));
        Assert.All(weights, w => Assert.Equal(storage, w.Storage));
        Assert.All(weights, w => Assert.Equal(w.Params * 4, w.Bytes));
        // PyTorch's Linear exports as Gemm with transB=1: the weight is [out, in], output channels on axis 0.
        Assert.All(weights, w => Assert.Equal(0, w.OutputChannelAxis));
    }

    [Fact]
    public void Weights_behind_a_Cast_are_the_stored_tensors()
    {
        var weights = WeightCatalog.Find(OnnxModel.Load(Fixtures.Model("lenet5-fp16.onnx")));

        Assert.Equal(LeNetWeights.Select(w => w.Name + "_fp16"), weights.Select(w => w.Name));
        Assert.All(weights, w => Assert.Equal((int)DataType.Float16, w.DataType));
        Assert.All(weights, w => Assert.Equal(w.Params * 2, w.Bytes));
    }

    [Fact]
    public void Each_operator_contributes_its_weight_operand_with_its_output_channel_axis()
    {
        var model = Synthetic(graph =>
        {
            graph.Initializer.Add(Tensor("matmul_w", 4, 3));
            graph.Initializer.Add(Tensor("matmul_left", 5, 4));
            graph.Initializer.Add(Tensor("embedding", 10, 4));
            graph.Initializer.Add(Tensor("deconv_w", 3, 2, 3, 3));
            graph.Initializer.Add(Tensor("gemm_w", 4, 5));
            graph.Initializer.Add(Tensor("vector", 4));
            graph.Node.Add(Node("MatMul", ["x", "matmul_w"], ["a"]));
            graph.Node.Add(Node("MatMul", ["matmul_left", "x"], ["b"]));
            graph.Node.Add(Node("Gather", ["embedding", "ids"], ["c"]));
            graph.Node.Add(Node("ConvTranspose", ["img", "deconv_w"], ["d"]));
            graph.Node.Add(Node("Gemm", ["x", "gemm_w"], ["e"]));
            graph.Node.Add(Node("Mul", ["x", "vector"], ["f"]));
            graph.Node.Add(Node("MatMul", ["x", "vector"], ["g"]));
        });

        var weights = WeightCatalog.Find(model).ToDictionary(w => w.Name);

        Assert.Equal(["matmul_w", "matmul_left", "embedding", "deconv_w", "gemm_w"], weights.Keys);
        Assert.Equal(1, weights["matmul_w"].OutputChannelAxis);
        Assert.Equal(0, weights["matmul_left"].OutputChannelAxis);
        Assert.Equal(0, weights["embedding"].OutputChannelAxis);
        Assert.Equal(1, weights["deconv_w"].OutputChannelAxis);
        Assert.Equal(1, weights["gemm_w"].OutputChannelAxis);
        Assert.Equal("ConvTranspose", weights["deconv_w"].Op);
    }

    [Fact]
    public void A_weight_shared_by_two_ops_is_listed_once_under_its_first_consumer_even_through_Identity()
    {
        var model = Synthetic(graph =>
        {
            graph.Initializer.Add(Tensor("tied", 10, 4));
            graph.Node.Add(Node("Gather", ["tied", "ids"], ["emb"]));
            graph.Node.Add(Node("Identity", ["tied"], ["tied_copy"]));
            graph.Node.Add(Node("MatMul", ["h", "tied_copy"], ["logits"]));
        });

        var weight = Assert.Single(WeightCatalog.Find(model));

        Assert.Equal("tied", weight.Name);
        Assert.Equal("Gather", weight.Op);
    }

    [Fact]
    public void Integer_tensors_and_non_constant_operands_are_not_weights()
    {
        var model = Synthetic(graph =>
        {
            var ints = Tensor("int_table", 10, 4);
            ints.DataType = (int)DataType.Int64;
            ints.RawData = ByteString.CopyFrom(new byte[10 * 4 * 8]);
            graph.Initializer.Add(ints);
            graph.Node.Add(Node("Gather", ["int_table", "ids"], ["a"]));
            graph.Node.Add(Node("MatMul", ["x", "y"], ["b"]));
        });

        Assert.Empty(WeightCatalog.Find(model));
    }

    private static TensorProto Tensor(string name, params long[] dims)
    {
        var count = dims.Aggregate(1L, (a, b) => a * b);
        return new TensorProto
        {
            Name = name,
            DataType = (int)DataType.Float,
            Dims = { dims },
            RawData = ByteString.CopyFrom(new byte[count * 4]),
        };
    }

    private static NodeProto Node(string op, string[] inputs, string[] outputs) =>
        new() { OpType = op, Input = { inputs }, Output = { outputs } };

    private static OnnxModel Synthetic(Action<GraphProto> build)
    {
        var graph = new GraphProto { Name = "g" };
        build(graph);
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 17 } } };
        using var temp = new TempFolder();
        File.WriteAllBytes(temp.File("m.onnx"), proto.ToByteArray());
        return OnnxModel.Load(temp.File("m.onnx"));
    }
}
