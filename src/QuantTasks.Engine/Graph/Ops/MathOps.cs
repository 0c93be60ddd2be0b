using QuantTasks.Engine.Native;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>Matrix products and element-wise arithmetic, with NumPy broadcasting as in ONNX.</summary>
internal static class MathOps
{
    public static void Register(Dictionary<string, OpImplementation> ops)
    {
        ops["MatMul"] = c => [c.Input(0).matmul(c.Input(1))];
        ops["Gemm"] = Gemm;
        ops["Add"] = c => [c.Input(0).add(c.Input(1), LibTorch.One)];
        ops["Sub"] = c => [c.Input(0).sub(c.Input(1))];
        ops["Mul"] = c => [c.Input(0) * c.Input(1)];
        ops["Div"] = Div;
        ops["Pow"] = c => [c.Input(0).pow(c.Input(1)).to(c.Input(0).dtype)];
        ops["Sqrt"] = c => [c.Input(0).sqrt()];
        ops["Neg"] = c => [c.Input(0).neg()];
        ops["Abs"] = c => [c.Input(0).abs()];
        ops["Exp"] = c => [c.Input(0).exp()];
        ops["Log"] = c => [c.Input(0).log()];
        ops["Erf"] = c => [c.Input(0).erf()];
        ops["Equal"] = c => [c.Input(0).eq(c.Input(1))];
        ops["Less"] = c => [c.Input(0).lt(c.Input(1))];
        ops["Greater"] = c => [c.Input(0).gt(c.Input(1))];
        ops["Where"] = c => [where(c.Input(0).to(ScalarType.Bool), c.Input(1), c.Input(2))];
    }

    private static Tensor[] Gemm(OpContext c)
    {
        var a = c.Input(0);
        var b = c.Input(1);
        if (c.Int("transA", 0) != 0)
        {
            a = a.t();
        }

        if (c.Int("transB", 0) != 0)
        {
            b = b.t();
        }

        var y = a.matmul(b);
        var alpha = c.Float("alpha", 1f);
        if (alpha != 1f)
        {
            y = y * alpha;
        }

        if (c.Optional(2) is { } bias)
        {
            var beta = c.Float("beta", 1f);
            y = y.add(beta == 1f ? bias : bias * beta, LibTorch.One);
        }

        return [y];
    }

    // Integer division truncates toward zero, as ONNX Runtime does.
    private static Tensor[] Div(OpContext c)
    {
        var a = c.Input(0);
        var b = c.Input(1);
        return a.is_floating_point() ? [a / b] : [a.div(b, RoundingMode.trunc)];
    }
}
