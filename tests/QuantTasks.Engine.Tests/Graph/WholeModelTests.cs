using Microsoft.ML.OnnxRuntime;
using QuantTasks.Data;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Tests;
using QuantTasks.Weights;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Graph;

/// <summary>Whole models run by the executor give ONNX Runtime's outputs, with the weights as gradient leaves.</summary>
[Collection(LibTorchTestGroup.Name)]
public class WholeModelTests
{
    [Theory]
    [InlineData("lenet5.onnx", new long[] { 8, 1, 28, 28 })]
    [InlineData("lenet5-opset9.onnx", new long[] { 8, 1, 28, 28 })]
    [InlineData("lenet5-constants.onnx", new long[] { 8, 1, 28, 28 })]
    [InlineData("lenet5-fp16.onnx", new long[] { 8, 1, 28, 28 })]
    [InlineData("mlp.onnx", new long[] { 8, 1, 28, 28 })]
    [InlineData("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", new long[] { 2, 3, 48, 192 })]
    [InlineData("ppocr/ch_PP-OCRv4_rec_infer.onnx", new long[] { 1, 3, 48, 160 })]
    public void Outputs_match_OnnxRuntime(string file, long[] shape)
    {
        var path = Fixtures.Model(file);
        var input = Input(shape);
        var expected = RunOnnxRuntime(path, input, shape);

        LibTorch.EnsureLoaded();
        using var scope = torch.NewDisposeScope();
        var model = OnnxModel.Load(path);
        var weights = WeightCatalog.Find(model);
        using var graph = TorchGraph.Compile(model, weights, torch.CPU);
        var output = graph.Forward(new Dictionary<string, torch.Tensor> { [graph.InputNames[0]] = torch.tensor(input, shape) }, [graph.OutputNames[0]])[0];
        var actual = output.detach().contiguous().data<float>().ToArray();

        Assert.NotEmpty(weights);
        Assert.All(graph.Parameters, p => Assert.True(p.requires_grad));
        Assert.True(output.requires_grad, "the output depends on the weights");
        Assert.Equal(expected.Length, actual.Length);
        var scale = Math.Max(1, expected.Max(Math.Abs));
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4 * scale, $"{file}: output {i} is {actual[i]}, ONNX Runtime says {expected[i]}");
        }
    }

    [Theory]
    [InlineData("lenet5.onnx", new long[] { 8, 1, 28, 28 })]
    [InlineData("ppocr/ch_PP-OCRv4_rec_infer.onnx", new long[] { 2, 3, 48, 160 })]
    public void A_forward_pass_leaves_only_its_outputs_to_the_callers_scope_and_backward_still_works(string file, long[] shape)
    {
        // Every value is released once its last reader has run, and every op's temporaries when it returns: what
        // the caller's scope still holds after the pass is the output and the values nothing reads, not one
        // tensor per node (the recognizer has 765 nodes). Autograd keeps what the backward pass needs.
        LibTorch.EnsureLoaded();
        var model = OnnxModel.Load(Fixtures.Model(file));
        var weights = WeightCatalog.Find(model);
        using var graph = TorchGraph.Compile(model, weights, torch.CPU);
        using var scope = torch.NewDisposeScope();
        var input = torch.tensor(Input(shape), shape);
        var output = graph.Forward(new Dictionary<string, torch.Tensor> { [graph.InputNames[0]] = input }, [graph.OutputNames[0]])[0];
        var held = scope.DisposablesCount;
        output.square().sum().backward();

        Assert.True(held <= 8, $"{file}: {held} tensors left in the caller's scope by {model.Graph.Node.Count} nodes");
        Assert.All(graph.Parameters, p => Assert.True(p.grad is { } g && g.isfinite().all().item<bool>(), "finite gradients"));
        Assert.Contains(graph.Parameters, p => p.grad!.abs().sum().item<float>() > 0);
    }

    private static float[] Input(long[] shape)
    {
        if (shape[1] == 1)
        {
            return DataFile.Load(Fixtures.Data("digits-test.npz")).Get("input").Floats!.AsSpan(0, (int)shape.Aggregate(1L, (a, b) => a * b)).ToArray();
        }

        // Images normalized as PaddleOCR feeds them, in [-1, 1].
        var random = new Random(5);
        return Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
    }

    private static float[] RunOnnxRuntime(string path, float[] input, long[] shape)
    {
        using var session = new InferenceSession(path);
        using var value = OrtValue.CreateTensorValueFromMemory(input, shape);
        using var options = new RunOptions();
        using var outputs = session.Run(options, [session.InputNames[0]], [value], [session.OutputNames[0]]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }
}
