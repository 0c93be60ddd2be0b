using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Graph;

/// <summary>
/// One ONNX node in a model of its own: float inputs are graph inputs filled with seeded random values,
/// integer inputs are initializers with given values. Runs in ONNX Runtime and in the TorchSharp executor.
/// </summary>
internal sealed class SingleNodeModel
{
    private readonly List<(string Name, long[] Shape, float[] Values)> _floats = [];
    private readonly List<TensorProto> _initializers = [];
    private readonly List<string> _inputs = [];
    private readonly List<AttributeProto> _attributes = [];
    private readonly string _op;
    private readonly long _opset;
    private readonly Random _random = new(42);
    private int _outputs = 1;
    private bool _condition;

    public SingleNodeModel(string op, long opset)
    {
        _op = op;
        _opset = opset;
    }

    public override string ToString() => $"{_op} (opset {_opset})";

    /// <summary>A float input of the given shape with values in [low, high).</summary>
    public SingleNodeModel Float(params long[] shape) => FloatIn(-2, 2, shape);

    public SingleNodeModel FloatIn(float low, float high, params long[] shape)
    {
        var name = $"in{_inputs.Count}";
        var count = (int)shape.Aggregate(1L, (a, b) => a * b);
        _floats.Add((name, shape, Enumerable.Range(0, count).Select(_ => low + ((float)_random.NextDouble() * (high - low))).ToArray()));
        _inputs.Add(name);
        return this;
    }

    /// <summary>An int64 initializer input (shapes, axes, indices).</summary>
    public SingleNodeModel Ints(params long[] values) => IntsShaped([values.Length], values);

    public SingleNodeModel IntsShaped(long[] shape, long[] values)
    {
        var name = $"in{_inputs.Count}";
        var bytes = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        _initializers.Add(new TensorProto { Name = name, DataType = 7, Dims = { shape }, RawData = ByteString.CopyFrom(bytes) });
        _inputs.Add(name);
        return this;
    }

    /// <summary>A float initializer input with given values.</summary>
    public SingleNodeModel FloatConstant(long[] shape, params float[] values)
    {
        var name = $"in{_inputs.Count}";
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        _initializers.Add(new TensorProto { Name = name, DataType = 1, Dims = { shape }, RawData = ByteString.CopyFrom(bytes) });
        _inputs.Add(name);
        return this;
    }

    /// <summary>Turns the first input into a boolean condition (x > 0) computed by a Greater node in front.</summary>
    public SingleNodeModel WithCondition()
    {
        _condition = true;
        return this;
    }

    /// <summary>An omitted optional input.</summary>
    public SingleNodeModel Skip()
    {
        _inputs.Add("");
        return this;
    }

    public SingleNodeModel Outputs(int count)
    {
        _outputs = count;
        return this;
    }

    public SingleNodeModel Attr(string name, long value) => Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });

    public SingleNodeModel Attr(string name, float value) => Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value });

    public SingleNodeModel Attr(string name, string value) => Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) });

    public SingleNodeModel Attr(string name, params long[] values) => Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } });

    public SingleNodeModel AttrTensor(string name, TensorProto value) => Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = value });

    /// <summary>Runs the node in ONNX Runtime and in the executor and returns both outputs, flattened to doubles.</summary>
    public (double[] Expected, double[] Actual, long[] ExpectedShape, long[] ActualShape)[] Run()
    {
        using var folder = new TempFolder();
        var path = folder.File("node.onnx");
        File.WriteAllBytes(path, Proto().ToByteArray());

        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(path, options);
        var values = _floats.Select(f => OrtValue.CreateTensorValueFromMemory(f.Values, f.Shape)).ToList();
        using var runOptions = new RunOptions();
        using var expected = session.Run(runOptions, _floats.Select(f => f.Name).ToArray(), values, session.OutputNames);

        LibTorch.EnsureLoaded();
        using var scope = torch.NewDisposeScope();
        var model = OnnxModel.Load(path);
        using var graph = TorchGraph.Compile(model, [], torch.CPU);
        var inputs = _floats.ToDictionary(f => f.Name, f => torch.tensor(f.Values, f.Shape));
        var actual = graph.Forward(inputs, graph.OutputNames);
        var results = new (double[], double[], long[], long[])[expected.Count];
        for (var i = 0; i < expected.Count; i++)
        {
            var info = expected[i].GetTensorTypeAndShape();
            results[i] = (ToDoubles(expected[i]), actual[i].to(torch.ScalarType.Float64).cpu().contiguous().data<double>().ToArray(), info.Shape, actual[i].shape);
        }

        foreach (var v in values)
        {
            v.Dispose();
        }

        return results;
    }

    /// <summary>
    /// Second order through the node: for L(x) = sum over float outputs of sum((c * y)^2) / 2 + sum(d * y) (c and
    /// d fixed, in [0.5, 1.5): the square makes even a linear node's Hessian nonzero, the linear term shows the
    /// node's own curvature, which the square's can cancel, as sqrt(x)^2 = x does), the executor's Hessian-vector product over the float inputs by double backward, and the same by
    /// central differences of its gradient, both flattened over all inputs. v uniform in [-1, 1), seeded.
    /// </summary>
    public (double[] Product, double[] Differences) SecondOrder(float epsilon = 1e-3f)
    {
        using var folder = new TempFolder();
        var path = folder.File("node.onnx");
        File.WriteAllBytes(path, Proto().ToByteArray());
        LibTorch.EnsureLoaded();
        using var scope = torch.NewDisposeScope();
        using var graph = TorchGraph.Compile(OnnxModel.Load(path), [], torch.CPU);
        var random = new Random(7);
        var directions = _floats.Select(f => torch.tensor(f.Values.Select(_ => (2 * (float)random.NextDouble()) - 1).ToArray(), f.Shape)).ToArray();
        Dictionary<int, (torch.Tensor C, torch.Tensor D)> weights = [];

        torch.Tensor[] Gradient(float step, bool secondOrder)
        {
            var inputs = _floats.Select((f, i) => (torch.tensor(f.Values, f.Shape) + (directions[i] * step)).detach().requires_grad_(true)).ToArray();
            var outputs = graph.Forward(_floats.Select((f, i) => (f.Name, inputs[i])).ToDictionary(p => p.Name, p => p.Item2), graph.OutputNames);
            var loss = torch.zeros([]);
            for (var o = 0; o < outputs.Length; o++)
            {
                if (!outputs[o].is_floating_point())
                {
                    continue;
                }

                if (!weights.TryGetValue(o, out var w))
                {
                    torch.Tensor Fixed() => torch.tensor(Enumerable.Range(0, (int)outputs[o].numel()).Select(_ => 0.5f + (float)random.NextDouble()).ToArray(), outputs[o].shape);
                    w = weights[o] = (Fixed(), Fixed());
                }

                loss = loss + ((w.C * outputs[o]).pow(2).sum() / 2) + (w.D * outputs[o]).sum();
            }

            var gradients = torch.autograd.grad([loss], inputs, create_graph: secondOrder, retain_graph: true, allow_unused: true)
                .Select((g, i) => g is null || g.IsInvalid ? torch.zeros_like(inputs[i]) : g).ToArray();
            if (!secondOrder)
            {
                return gradients;
            }

            var inner = gradients.Select((g, i) => (g * directions[i]).sum()).Aggregate((a, b) => a + b);
            return torch.autograd.grad([inner], inputs, retain_graph: true, allow_unused: true)
                .Select((h, i) => h is null || h.IsInvalid ? torch.zeros_like(inputs[i]) : h).ToArray();
        }

        double[] Flat(IEnumerable<torch.Tensor> tensors) =>
            tensors.SelectMany(t => t.detach().to(torch.ScalarType.Float64).contiguous().data<double>().ToArray()).ToArray();

        var product = Flat(Gradient(0, secondOrder: true));
        var plus = Flat(Gradient(epsilon, secondOrder: false));
        var minus = Flat(Gradient(-epsilon, secondOrder: false));
        return (product, plus.Select((p, i) => (p - minus[i]) / (2.0 * epsilon)).ToArray());
    }

    private static double[] ToDoubles(OrtValue value) => value.GetTensorTypeAndShape().ElementDataType switch
    {
        TensorElementType.Float => value.GetTensorDataAsSpan<float>().ToArray().Select(v => (double)v).ToArray(),
        TensorElementType.Int64 => value.GetTensorDataAsSpan<long>().ToArray().Select(v => (double)v).ToArray(),
        TensorElementType.Int32 => value.GetTensorDataAsSpan<int>().ToArray().Select(v => (double)v).ToArray(),
        TensorElementType.Bool => value.GetTensorDataAsSpan<bool>().ToArray().Select(v => v ? 1.0 : 0.0).ToArray(),
        var t => throw new InvalidOperationException($"Output type {t} is not compared."),
    };

    private SingleNodeModel Add(AttributeProto attribute)
    {
        _attributes.Add(attribute);
        return this;
    }

    private ModelProto Proto()
    {
        var inputs = _inputs.ToList();
        var prefix = new List<NodeProto>();
        if (_condition)
        {
            var zero = new TensorProto { Name = "zero", DataType = 1, FloatData = { 0f } };
            _initializers.Add(zero);
            prefix.Add(new NodeProto { OpType = "Greater", Input = { inputs[0], "zero" }, Output = { "condition" } });
            inputs[0] = "condition";
            _condition = false;
        }

        var node = new NodeProto { OpType = _op, Name = "node", Input = { inputs }, Attribute = { _attributes } };
        for (var i = 0; i < _outputs; i++)
        {
            node.Output.Add($"out{i}");
        }

        var graph = new GraphProto { Name = "single", Node = { prefix }, Initializer = { _initializers } };
        graph.Node.Add(node);
        foreach (var (name, shape, _) in _floats)
        {
            graph.Input.Add(new ValueInfoProto
            {
                Name = name,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto { Dim = { shape.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }) } } } },
            });
        }

        for (var i = 0; i < _outputs; i++)
        {
            graph.Output.Add(new ValueInfoProto { Name = $"out{i}" });
        }

        var ir = _opset >= 21 ? 10 : _opset >= 19 ? 9 : _opset >= 15 ? 8 : _opset >= 13 ? 7 : _opset >= 11 ? 6 : 5;
        return new ModelProto { IrVersion = ir, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = _opset } } };
    }
}
