using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>Activations, softmax and clipping, with ONNX's attribute defaults.</summary>
internal static class ActivationOps
{
    public static void Register(Dictionary<string, OpImplementation> ops)
    {
        ops["Relu"] = c => [c.Input(0).relu()];
        ops["LeakyRelu"] = c => [F.leaky_relu(c.Input(0), c.Float("alpha", 0.01f))];
        ops["PRelu"] = c => [where(c.Input(0) < 0, c.Input(0) * c.Input(1), c.Input(0))];
        ops["Elu"] = c => [F.elu(c.Input(0), c.Float("alpha", 1f))];
        ops["Sigmoid"] = c => [c.Input(0).sigmoid()];
        ops["HardSigmoid"] = c => [(c.Input(0) * c.Float("alpha", 0.2f) + c.Float("beta", 0.5f)).clamp(0, 1)];
        ops["HardSwish"] = c => [c.Input(0) * ((c.Input(0) / 6f) + 0.5f).clamp(0, 1)];
        ops["Tanh"] = c => [c.Input(0).tanh()];
        ops["Gelu"] = c => [c.String("approximate", "none") == "tanh" ? F.gelu(c.Input(0), TorchSharp.Modules.GELU.Approximate.tanh) : F.gelu(c.Input(0))];
        ops["Clip"] = Clip;
        ops["Softmax"] = c => [Softmax(c, log: false)];
        ops["LogSoftmax"] = c => [Softmax(c, log: true)];
    }

    private static Tensor[] Clip(OpContext c)
    {
        var x = c.Input(0);
        Tensor? min, max;
        if (c.Opset < 11)
        {
            min = c.HasAttribute("min") ? tensor(c.Float("min", 0), x.dtype, x.device) : null;
            max = c.HasAttribute("max") ? tensor(c.Float("max", 0), x.dtype, x.device) : null;
        }
        else
        {
            min = c.Optional(1);
            max = c.Optional(2);
        }

        return [min is null && max is null ? x : x.clamp(min, max)];
    }

    // Before opset 13 the input is seen as 2-D, [prod(dims < axis), prod(dims >= axis)]; from 13 on it is one axis.
    private static Tensor Softmax(OpContext c, bool log)
    {
        var x = c.Input(0);
        var rank = x.dim();
        var axis = c.Int("axis", c.Opset < 13 ? 1 : -1);
        axis = axis < 0 ? axis + rank : axis;
        if (c.Opset >= 13 || axis == rank - 1)
        {
            return log ? F.log_softmax(x, axis) : F.softmax(x, axis);
        }

        var shape = x.shape;
        var flat = x.reshape(shape.Take((int)axis).Aggregate(1L, (a, b) => a * b), -1);
        var y = log ? F.log_softmax(flat, 1) : F.softmax(flat, 1);
        return y.reshape(shape);
    }
}
