using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Tests;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Graph;

/// <summary>Every operator the executor supports computes what ONNX Runtime computes, within 1e-4 relative.</summary>
[Collection(LibTorchTestGroup.Name)]
public class OperatorTests
{
    private static readonly Dictionary<string, Func<SingleNodeModel>> Cases = new()
    {
        ["Conv 2d pads strides"] = () => new SingleNodeModel("Conv", 17).Float(2, 3, 9, 9).Float(4, 3, 3, 3).Float(4).Attr("pads", 1, 1, 1, 1).Attr("strides", 2, 2),
        ["Conv asymmetric pads, dilation, groups"] = () => new SingleNodeModel("Conv", 11).Float(1, 4, 10, 10).Float(6, 2, 3, 3).Attr("pads", 0, 1, 2, 1).Attr("dilations", 2, 1).Attr("group", 2),
        ["Conv auto_pad SAME_UPPER"] = () => new SingleNodeModel("Conv", 13).Float(1, 2, 7, 7).Float(3, 2, 4, 4).Attr("auto_pad", "SAME_UPPER").Attr("strides", 2, 2),
        ["Conv 1d"] = () => new SingleNodeModel("Conv", 13).Float(2, 3, 12).Float(5, 3, 3).Attr("pads", 1, 1),
        ["ConvTranspose 2d"] = () => new SingleNodeModel("ConvTranspose", 17).Float(1, 4, 5, 5).Float(4, 3, 3, 3).Float(3).Attr("strides", 2, 2).Attr("pads", 1, 1, 1, 1).Attr("output_padding", 1, 1),
        ["ConvTranspose groups, asymmetric pads"] = () => new SingleNodeModel("ConvTranspose", 11).Float(1, 4, 4, 4).Float(4, 1, 2, 2).Attr("group", 2).Attr("strides", 2, 2).Attr("pads", 0, 1, 1, 0),
        ["Gemm transB alpha beta"] = () => new SingleNodeModel("Gemm", 13).Float(3, 5).Float(4, 5).Float(4).Attr("transB", 1L).Attr("alpha", 0.5f).Attr("beta", 2f),
        ["Gemm transA"] = () => new SingleNodeModel("Gemm", 11).Float(5, 3).Float(5, 4).Attr("transA", 1L),
        ["MatMul batched"] = () => new SingleNodeModel("MatMul", 13).Float(2, 3, 4, 5).Float(5, 6),
        ["Add broadcast"] = () => new SingleNodeModel("Add", 14).Float(2, 3, 4).Float(4),
        ["Sub"] = () => new SingleNodeModel("Sub", 14).Float(2, 3).Float(2, 1),
        ["Mul"] = () => new SingleNodeModel("Mul", 14).Float(2, 3).Float(1, 3),
        ["Div"] = () => new SingleNodeModel("Div", 14).Float(2, 3).FloatIn(0.5f, 2, 2, 3),
        ["Pow"] = () => new SingleNodeModel("Pow", 15).FloatIn(0.1f, 2, 3, 4).Float(3, 4),
        ["Sqrt"] = () => new SingleNodeModel("Sqrt", 13).FloatIn(0.01f, 4, 3, 4),
        ["Neg"] = () => new SingleNodeModel("Neg", 13).Float(3, 4),
        ["Abs"] = () => new SingleNodeModel("Abs", 13).Float(3, 4),
        ["Exp"] = () => new SingleNodeModel("Exp", 13).Float(3, 4),
        ["Log"] = () => new SingleNodeModel("Log", 13).FloatIn(0.01f, 4, 3, 4),
        ["Erf"] = () => new SingleNodeModel("Erf", 13).Float(3, 4),
        ["Relu"] = () => new SingleNodeModel("Relu", 14).Float(3, 4),
        ["LeakyRelu"] = () => new SingleNodeModel("LeakyRelu", 16).Float(3, 4).Attr("alpha", 0.2f),
        ["PRelu"] = () => new SingleNodeModel("PRelu", 16).Float(2, 3, 4).Float(3, 1),
        ["Elu"] = () => new SingleNodeModel("Elu", 6).Float(3, 4).Attr("alpha", 0.7f),
        ["Sigmoid"] = () => new SingleNodeModel("Sigmoid", 13).Float(3, 4),
        ["HardSigmoid"] = () => new SingleNodeModel("HardSigmoid", 6).Float(3, 4).Attr("alpha", 0.25f).Attr("beta", 0.4f),
        ["HardSwish"] = () => new SingleNodeModel("HardSwish", 14).FloatIn(-5, 5, 3, 4),
        ["Tanh"] = () => new SingleNodeModel("Tanh", 13).Float(3, 4),
        ["Clip opset 9 attributes"] = () => new SingleNodeModel("Clip", 9).Float(3, 4).Attr("min", -0.5f).Attr("max", 0.7f),
        ["Clip opset 13 inputs"] = () => new SingleNodeModel("Clip", 13).Float(3, 4).FloatConstant([], 0f).FloatConstant([], 6f),
        ["Clip opset 13 max only"] = () => new SingleNodeModel("Clip", 13).Float(3, 4).Skip().FloatConstant([], 0.5f),
        ["Gelu"] = () => new SingleNodeModel("Gelu", 20).Float(3, 4),
        ["Gelu tanh"] = () => new SingleNodeModel("Gelu", 20).Float(3, 4).Attr("approximate", "tanh"),
        ["Softmax opset 13"] = () => new SingleNodeModel("Softmax", 13).Float(2, 3, 4).Attr("axis", 1L),
        ["Softmax opset 11 coerced to 2-D"] = () => new SingleNodeModel("Softmax", 11).Float(2, 3, 4).Attr("axis", 1L),
        ["LogSoftmax"] = () => new SingleNodeModel("LogSoftmax", 13).Float(2, 5),
        ["BatchNormalization"] = () => new SingleNodeModel("BatchNormalization", 15).Float(2, 3, 4, 4).Float(3).Float(3).Float(3).FloatIn(0.5f, 2, 3).Attr("epsilon", 1e-3f),
        ["LayerNormalization"] = () => new SingleNodeModel("LayerNormalization", 17).Float(2, 3, 4).Float(4).Float(4),
        ["LayerNormalization axis 1"] = () => new SingleNodeModel("LayerNormalization", 17).Float(2, 3, 4).Float(3, 4).Float(3, 4).Attr("axis", 1L),
        ["InstanceNormalization"] = () => new SingleNodeModel("InstanceNormalization", 6).Float(2, 3, 5, 5).Float(3).Float(3),
        ["MaxPool ceil mode"] = () => new SingleNodeModel("MaxPool", 12).Float(1, 2, 7, 7).Attr("kernel_shape", 3, 3).Attr("strides", 2, 2).Attr("ceil_mode", 1L),
        ["MaxPool asymmetric pads"] = () => new SingleNodeModel("MaxPool", 12).Float(1, 2, 6, 6).Attr("kernel_shape", 2, 2).Attr("pads", 0, 0, 1, 1),
        ["AveragePool"] = () => new SingleNodeModel("AveragePool", 11).Float(1, 2, 6, 6).Attr("kernel_shape", 3, 3).Attr("pads", 1, 1, 1, 1),
        ["AveragePool count_include_pad"] = () => new SingleNodeModel("AveragePool", 11).Float(1, 2, 6, 6).Attr("kernel_shape", 3, 3).Attr("pads", 1, 1, 1, 1).Attr("count_include_pad", 1L),
        ["AveragePool asymmetric pads"] = () => new SingleNodeModel("AveragePool", 11).Float(1, 2, 6, 6).Attr("kernel_shape", 2, 2).Attr("pads", 1, 0, 0, 1),
        ["GlobalAveragePool"] = () => new SingleNodeModel("GlobalAveragePool", 1).Float(2, 3, 4, 5),
        ["GlobalMaxPool"] = () => new SingleNodeModel("GlobalMaxPool", 1).Float(2, 3, 4, 5),
        ["Flatten"] = () => new SingleNodeModel("Flatten", 13).Float(2, 3, 4, 5).Attr("axis", 2L),
        ["Reshape with 0 and -1"] = () => new SingleNodeModel("Reshape", 14).Float(2, 3, 4).Ints(0, -1, 2),
        ["Transpose"] = () => new SingleNodeModel("Transpose", 13).Float(2, 3, 4).Attr("perm", 2, 0, 1),
        ["Transpose default"] = () => new SingleNodeModel("Transpose", 13).Float(2, 3, 4),
        ["Squeeze opset 11"] = () => new SingleNodeModel("Squeeze", 11).Float(2, 1, 4, 1).Attr("axes", 1, -1),
        ["Squeeze opset 13"] = () => new SingleNodeModel("Squeeze", 13).Float(2, 1, 4, 1).Ints(1),
        ["Unsqueeze opset 11"] = () => new SingleNodeModel("Unsqueeze", 11).Float(2, 3).Attr("axes", 0, 3),
        ["Unsqueeze opset 13"] = () => new SingleNodeModel("Unsqueeze", 13).Float(2, 3).Ints(-1, 1),
        ["Concat"] = () => new SingleNodeModel("Concat", 13).Float(2, 3).Float(2, 5).Attr("axis", -1L),
        ["Split opset 11"] = () => new SingleNodeModel("Split", 11).Float(2, 6).Attr("axis", 1L).Attr("split", 2, 4).Outputs(2),
        ["Split opset 13 equal"] = () => new SingleNodeModel("Split", 13).Float(6, 2).Outputs(3),
        ["Split opset 18 num_outputs"] = () => new SingleNodeModel("Split", 18).Float(7, 2).Attr("num_outputs", 3L).Outputs(3),
        ["Slice opset 9"] = () => new SingleNodeModel("Slice", 9).Float(4, 6).Attr("starts", 1, 2).Attr("ends", 3, 100),
        ["Slice steps and negatives"] = () => new SingleNodeModel("Slice", 13).Float(5, 8).Ints(-1, 1).Ints(-6, 7).Ints(0, 1).Ints(-2, 3),
        ["Slice to the end"] = () => new SingleNodeModel("Slice", 13).Float(5, 8).Ints(2).Ints(long.MaxValue).Ints(1),
        ["Gather axis 1 with negative indices"] = () => new SingleNodeModel("Gather", 13).Float(3, 5).IntsShaped([2, 2], [0, -1, 2, 1]).Attr("axis", 1L),
        ["Gather scalar index"] = () => new SingleNodeModel("Gather", 13).Float(4, 3).IntsShaped([], [2]),
        ["Shape"] = () => new SingleNodeModel("Shape", 13).Float(2, 3, 4),
        ["Shape start end"] = () => new SingleNodeModel("Shape", 15).Float(2, 3, 4, 5).Attr("start", 1L).Attr("end", -1L),
        ["ConstantOfShape"] = () => new SingleNodeModel("ConstantOfShape", 9).Ints(2, 3).AttrTensor("value", new Onnx.Proto.TensorProto { DataType = 1, Dims = { 1 }, FloatData = { 1.5f } }),
        ["Cast to int64"] = () => new SingleNodeModel("Cast", 13).FloatIn(-10, 10, 3, 4).Attr("to", 7L),
        ["Identity"] = () => new SingleNodeModel("Identity", 16).Float(3, 4),
        ["Dropout"] = () => new SingleNodeModel("Dropout", 13).Float(3, 4),
        ["ReduceMean opset 13 attribute"] = () => new SingleNodeModel("ReduceMean", 13).Float(2, 3, 4).Attr("axes", 1, 2).Attr("keepdims", 0L),
        ["ReduceMean opset 18 input"] = () => new SingleNodeModel("ReduceMean", 18).Float(2, 3, 4).Ints(-1),
        ["ReduceSum opset 13 input"] = () => new SingleNodeModel("ReduceSum", 13).Float(2, 3, 4).Ints(0),
        ["ReduceSum all"] = () => new SingleNodeModel("ReduceSum", 13).Float(2, 3, 4).Attr("keepdims", 0L),
        ["ReduceMax"] = () => new SingleNodeModel("ReduceMax", 13).Float(2, 3, 4).Attr("axes", new long[] { 1 }),
        ["Resize nearest asymmetric floor"] = () => new SingleNodeModel("Resize", 13).Float(1, 2, 3, 4).Skip().FloatConstant([4], 1, 1, 2, 1.5f).Attr("mode", "nearest").Attr("coordinate_transformation_mode", "asymmetric").Attr("nearest_mode", "floor"),
        ["Resize nearest half_pixel"] = () => new SingleNodeModel("Resize", 13).Float(1, 2, 3, 4).Skip().FloatConstant([4], 1, 1, 2, 2),
        ["Resize linear half_pixel sizes"] = () => new SingleNodeModel("Resize", 13).Float(1, 2, 3, 4).Skip().Skip().Ints(1, 2, 5, 7).Attr("mode", "linear"),
        ["Resize linear align_corners"] = () => new SingleNodeModel("Resize", 11).Float(1, 1, 4, 4).FloatConstant([0]).FloatConstant([4], 1, 1, 2, 2).Attr("mode", "linear").Attr("coordinate_transformation_mode", "align_corners"),
        ["Resize opset 10"] = () => new SingleNodeModel("Resize", 10).Float(1, 1, 2, 3).FloatConstant([4], 1, 1, 2, 2),
        ["Pad constant"] = () => new SingleNodeModel("Pad", 13).Float(2, 3).Ints(0, 1, 1, 2).FloatConstant([], 0.5f),
        ["Pad reflect"] = () => new SingleNodeModel("Pad", 13).Float(1, 2, 4, 4).Ints(0, 0, 1, 2, 0, 0, 2, 1).Attr("mode", "reflect"),
        ["Pad edge"] = () => new SingleNodeModel("Pad", 13).Float(1, 2, 4, 4).Ints(0, 0, 1, 1, 0, 0, 1, 1).Attr("mode", "edge"),
        ["Pad opset 2 attribute"] = () => new SingleNodeModel("Pad", 2).Float(2, 3).Attr("pads", 1, 0, 0, 2),
        ["Expand"] = () => new SingleNodeModel("Expand", 13).Float(3, 1).Ints(2, 3, 4),
        ["Where"] = () => new SingleNodeModel("Where", 16).Float(3, 4).Float(3, 4).Float(3, 4).WithCondition(),
        ["Equal"] = () => new SingleNodeModel("Equal", 13).Ints(1, 2, 3).Ints(1, 0, 3),
        ["Less"] = () => new SingleNodeModel("Less", 13).Float(3, 4).Float(3, 4),
        ["Greater"] = () => new SingleNodeModel("Greater", 13).Float(3, 4).Float(4),
        ["Range"] = () => new SingleNodeModel("Range", 11).IntsShaped([], [2]).IntsShaped([], [11]).IntsShaped([], [3]),
        ["Tile"] = () => new SingleNodeModel("Tile", 13).Float(2, 3).Ints(2, 3),
        ["ArgMax"] = () => new SingleNodeModel("ArgMax", 13).Float(3, 5).Attr("axis", 1L).Attr("keepdims", 0L),
        ["ArgMax last index"] = () => new SingleNodeModel("ArgMax", 13).FloatConstant([2, 3], 1, 3, 3, 2, 2, 0).Attr("axis", 1L).Attr("select_last_index", 1L),
    };

    public static TheoryData<string> Names() => new(Cases.Keys);

    [Theory]
    [MemberData(nameof(Names))]
    public void Matches_OnnxRuntime(string name)
    {
        foreach (var (expected, actual, expectedShape, actualShape) in Cases[name]().Run())
        {
            Assert.Equal(expectedShape, actualShape);
            Assert.Equal(expected.Length, actual.Length);
            for (var i = 0; i < expected.Length; i++)
            {
                var tolerance = 1e-4 * Math.Max(1, Math.Abs(expected[i]));
                Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"{name}: element {i} is {actual[i]}, ONNX Runtime says {expected[i]}");
            }
        }
    }

    // Cases whose outputs are not floats (shapes, indices, booleans) or that have no float input to differentiate.
    private static readonly HashSet<string> WithoutSecondOrder = new(StringComparer.Ordinal)
    {
        "Shape", "Shape start end", "ConstantOfShape", "Cast to int64", "Equal", "Less", "Greater", "Range", "ArgMax", "ArgMax last index",
    };

    public static TheoryData<string> DifferentiableNames() => new(Cases.Keys.Where(k => !WithoutSecondOrder.Contains(k)));

    /// <summary>
    /// The Hessian analysis differentiates twice through every operator: the executor's Hessian-vector product
    /// (double backward) agrees with central differences of its gradient, within 2% of the product's norm. A
    /// few elements may sit within the step of a kink (Relu at 0, a max's tie); the norm absorbs them.
    /// </summary>
    [Theory]
    [MemberData(nameof(DifferentiableNames))]
    public void Hessian_vector_products_match_finite_differences_of_gradients(string name)
    {
        var (product, differences) = Cases[name]().SecondOrder();

        var scale = Math.Sqrt(differences.Sum(d => d * d));
        var error = Math.Sqrt(product.Zip(differences, (p, d) => (p - d) * (p - d)).Sum());
        Assert.True(scale > 1e-3, $"{name}: the product is {scale}, too small to check anything");
        Assert.True(error <= 0.02 * scale, $"{name}: |Hv - finite differences| = {error:G3} against |Hv| = {scale:G3}");
    }

    [Fact]
    public void Every_operator_of_the_issue_list_is_supported_and_tested()
    {
        string[] required =
        [
            "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Log", "Relu",
            "LeakyRelu", "PRelu", "Elu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Erf", "Gelu", "Softmax", "LogSoftmax",
            "BatchNormalization", "LayerNormalization", "InstanceNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
            "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Shape",
            "Constant", "ConstantOfShape", "Cast", "Identity", "Dropout", "ReduceMean", "ReduceSum", "ReduceMax", "Resize", "Pad",
            "Expand", "Where", "Equal", "Less", "Greater", "Range", "Tile", "ArgMax",
        ];

        Assert.Empty(required.Except(OpRegistry.Supported));
        var tested = Cases.Keys.Select(k => k.Split(' ')[0]).Append("Constant").ToHashSet();
        Assert.Empty(required.Except(tested));
    }

    [Fact]
    public void A_model_with_unsupported_operators_fails_at_once_listing_every_one()
    {
        using var folder = new TempFolder();
        var proto = new Onnx.Proto.ModelProto
        {
            IrVersion = 8,
            OpsetImport = { new Onnx.Proto.OperatorSetIdProto { Version = 17 } },
            Graph = new Onnx.Proto.GraphProto
            {
                Name = "g",
                Node =
                {
                    new Onnx.Proto.NodeProto { OpType = "Relu", Input = { "x" }, Output = { "a" } },
                    new Onnx.Proto.NodeProto { OpType = "NonMaxSuppression", Name = "nms", Input = { "a" }, Output = { "b" } },
                    new Onnx.Proto.NodeProto { OpType = "Loop", Name = "loop1", Input = { "b" }, Output = { "c" } },
                    new Onnx.Proto.NodeProto { OpType = "Loop", Name = "loop2", Input = { "c" }, Output = { "d" } },
                    new Onnx.Proto.NodeProto { OpType = "FusedGemm", Domain = "com.microsoft", Name = "fused", Input = { "d" }, Output = { "e" } },
                },
            },
        };
        File.WriteAllBytes(folder.File("m.onnx"), Google.Protobuf.MessageExtensions.ToByteArray(proto));
        LibTorch.EnsureLoaded();

        var error = Assert.Throws<QuantException>(() => TorchGraph.Compile(OnnxModel.Load(folder.File("m.onnx")), [], torch.CPU));

        Assert.Equal(ErrorCode.UnsupportedOperator, error.Code);
        Assert.Contains("4 node(s)", error.Message, StringComparison.Ordinal);
        Assert.Contains("NonMaxSuppression (nms)", error.Message, StringComparison.Ordinal);
        Assert.Contains("Loop (loop1, loop2)", error.Message, StringComparison.Ordinal);
        Assert.Contains("com.microsoft.FusedGemm (fused)", error.Message, StringComparison.Ordinal);
    }
}
