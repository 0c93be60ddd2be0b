namespace QuantTasks.Engine.Graph;

/// <summary>An ONNX operator in TorchSharp: node inputs in, node outputs out, differentiable where ONNX is.</summary>
internal delegate TorchSharp.torch.Tensor[] OpImplementation(OpContext context);

/// <summary>Every ONNX operator (default domain) the differentiable executor runs, by op type.</summary>
internal static class OpRegistry
{
    private static readonly Dictionary<string, OpImplementation> s_ops = Build();

    /// <summary>The op types supported, sorted.</summary>
    public static IReadOnlyList<string> Supported => s_ops.Keys.Order(StringComparer.Ordinal).ToArray();

    public static bool TryGet(string opType, out OpImplementation implementation) =>
        s_ops.TryGetValue(opType, out implementation!);

    private static Dictionary<string, OpImplementation> Build()
    {
        var ops = new Dictionary<string, OpImplementation>(StringComparer.Ordinal);
        Ops.MathOps.Register(ops);
        Ops.ActivationOps.Register(ops);
        Ops.ConvolutionOps.Register(ops);
        Ops.NormalizationOps.Register(ops);
        Ops.ShapeOps.Register(ops);
        Ops.ReductionOps.Register(ops);
        Ops.ResizeOps.Register(ops);
        return ops;
    }
}
