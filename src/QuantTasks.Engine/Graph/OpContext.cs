using System.Text;
using QuantTasks.Diagnostics;
using QuantTasks.Onnx.Proto;
using TorchSharp;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Graph;

/// <summary>
/// What an operator implementation sees of one node: its inputs as tensors (null for omitted optional
/// inputs), its attributes with ONNX's defaults, and the opset the model imports.
/// </summary>
internal sealed class OpContext
{
    private readonly NodeProto _node;
    private readonly Tensor?[] _inputs;

    public OpContext(NodeProto node, Tensor?[] inputs, long opset)
    {
        _node = node;
        _inputs = inputs;
        Opset = opset;
    }

    /// <summary>The default-domain opset of the model.</summary>
    public long Opset { get; }

    public int InputCount => _inputs.Length;

    public int OutputCount => _node.Output.Count;

    /// <summary>The node's name, or its op type and first output when it has none (for messages).</summary>
    public string NodeName => string.IsNullOrEmpty(_node.Name) ? $"{_node.OpType} -> {_node.Output.FirstOrDefault()}" : _node.Name;

    /// <summary>A required input.</summary>
    public Tensor Input(int index) =>
        Optional(index) ?? throw Fail($"needs input {index}, which is missing");

    /// <summary>An optional input, or null when absent or empty.</summary>
    public Tensor? Optional(int index) => index < _inputs.Length ? _inputs[index] : null;

    public bool HasAttribute(string name) => Attribute(name) is not null;

    public long Int(string name, long fallback) => Attribute(name)?.I ?? fallback;

    public float Float(string name, float fallback) => Attribute(name) is { } a ? a.F : fallback;

    public string String(string name, string fallback) =>
        Attribute(name) is { } a ? Encoding.UTF8.GetString(a.S.Span) : fallback;

    public long[]? Ints(string name) => Attribute(name)?.Ints.ToArray();

    public float[]? Floats(string name) => Attribute(name)?.Floats.ToArray();

    public TensorProto? TensorAttribute(string name) => Attribute(name)?.T;

    /// <summary>An integer list given as an attribute before <paramref name="inputSince"/> and as input <paramref name="inputIndex"/> from then on.</summary>
    public long[]? IntsFromAttributeOrInput(string name, int inputIndex, long inputSince) =>
        Opset >= inputSince ? (Optional(inputIndex) is { } t ? Values(t) : null) : Ints(name);

    /// <summary>An error naming this node.</summary>
    public QuantException Fail(string what) =>
        new(ErrorCode.UnsupportedOperator, $"{_node.OpType} node '{NodeName}' {what}.");

    /// <summary>The values of a small integer tensor (shapes, axes, indices), read to the host.</summary>
    public static long[] Values(Tensor tensor)
    {
        using var flat = tensor.to(ScalarType.Int64).cpu().flatten();
        return flat.data<long>().ToArray();
    }

    /// <summary>The values of a small float tensor, read to the host.</summary>
    public static double[] DoubleValues(Tensor tensor)
    {
        using var flat = tensor.to(ScalarType.Float64).cpu().flatten();
        return flat.data<double>().ToArray();
    }

    private AttributeProto? Attribute(string name) => _node.Attribute.FirstOrDefault(a => a.Name == name);
}
