using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Evaluation;

public sealed class AffectedGraphTests
{
    [Fact]
    public void A_residual_block_s_second_convolution_reads_its_own_input_and_the_skip_connection()
    {
        // stages.0: conv1 -> relu -> conv2 (onnx::Conv_95), then + the stem's output (the skip), relu, and on.
        var model = OnnxModel.Load(Fixtures.Model("resnet-bn.onnx"));

        var part = AffectedGraph.Find(model.Graph, "onnx::Conv_95", "logits")!;

        Assert.Equal(["/stages/stages.0/Relu_output_0", "/stem/stem.2/Relu_output_0"], part.Frontier.Order(StringComparer.Ordinal));
        Assert.Empty(part.DataInputs);
        Assert.Equal("/stages/stages.0/conv2/Conv_output_0", part.Nodes[0].Output[0]);
        Assert.Equal("logits", part.Nodes[^1].Output[0]);
        Assert.Equal(model.Graph.Node.Count - 4, part.Nodes.Count); // stem conv, relu, stages.0 conv1, relu stay outside
    }

    [Fact]
    public void The_first_layer_and_the_last_layer_bound_what_a_part_saves()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));

        // conv1 reads the data itself: its part is the whole graph, nothing to save.
        Assert.Null(AffectedGraph.Find(model.Graph, "conv1.weight", "logits"));
        var last = AffectedGraph.Find(model.Graph, "fc3.weight", "logits")!;
        Assert.Equal(["/Relu_3_output_0"], last.Frontier);
        Assert.Equal("Gemm", Assert.Single(last.Nodes).OpType);
    }

    [Fact]
    public void Side_branches_to_other_outputs_are_left_out_constants_come_along_and_subgraphs_are_refused()
    {
        // x -> A = Relu(x); B = MatMul(A, w); side = Neg(B) (another output); c = Constant; y = Add(B, c) + A.
        var graph = new GraphProto { Name = "g" };
        graph.Input.Add(new ValueInfoProto { Name = "x" });
        graph.Output.Add(new ValueInfoProto { Name = "y" });
        graph.Output.Add(new ValueInfoProto { Name = "side" });
        graph.Initializer.Add(new TensorProto { Name = "w", DataType = 1, Dims = { 1 }, FloatData = { 2 } });
        graph.Node.Add(new NodeProto { OpType = "Relu", Input = { "x" }, Output = { "a" } });
        graph.Node.Add(new NodeProto { OpType = "Constant", Output = { "c" }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = new TensorProto { DataType = 1, FloatData = { 1 } } } } });
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "a", "w" }, Output = { "b" } });
        graph.Node.Add(new NodeProto { OpType = "Neg", Input = { "b" }, Output = { "side" } });
        graph.Node.Add(new NodeProto { OpType = "Add", Input = { "b", "c" }, Output = { "bc" } });
        graph.Node.Add(new NodeProto { OpType = "Add", Input = { "bc", "x" }, Output = { "y" } });

        var part = AffectedGraph.Find(graph, "w", "y")!;

        Assert.Equal(["Constant", "MatMul", "Add", "Add"], part.Nodes.Select(n => n.OpType));
        Assert.Equal(["a"], part.Frontier);
        Assert.Equal(["x"], part.DataInputs);
        Assert.Null(AffectedGraph.Find(graph, "w", "x")); // the output does not depend on the weight

        graph.Node.Add(new NodeProto { OpType = "If", Input = { "x" }, Output = { "z" }, Attribute = { new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = new GraphProto() } } });
        Assert.Null(AffectedGraph.Find(graph, "w", "y"));
    }
}
