using QuantTasks.Engine.Native;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>Normalizations in inference form, written out so that gradients flow as in any other op.</summary>
internal static class NormalizationOps
{
    public static void Register(Dictionary<string, OpImplementation> ops)
    {
        ops["BatchNormalization"] = BatchNormalization;
        ops["LayerNormalization"] = LayerNormalization;
        ops["InstanceNormalization"] = InstanceNormalization;
        ops["Dropout"] = Dropout;
    }

    // Inference: y = scale * (x - mean) / sqrt(var + epsilon) + bias, per channel (axis 1).
    private static Tensor[] BatchNormalization(OpContext c)
    {
        var x = c.Input(0);
        var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        shape[1] = -1;
        var scale = c.Input(1).reshape(shape);
        var bias = c.Input(2).reshape(shape);
        var mean = c.Input(3).reshape(shape);
        var variance = c.Input(4).reshape(shape);
        var epsilon = c.Float("epsilon", 1e-5f);
        var y = (x.sub(mean) / (variance + epsilon).sqrt() * scale).add(bias, LibTorch.One);
        return [y];
    }

    // Normalizes over the axes from `axis` to the last; scale and bias broadcast over them.
    private static Tensor[] LayerNormalization(OpContext c)
    {
        var x = c.Input(0);
        var rank = x.dim();
        var axis = c.Int("axis", -1);
        axis = axis < 0 ? axis + rank : axis;
        var axes = Enumerable.Range((int)axis, (int)(rank - axis)).Select(a => (long)a).ToArray();
        var epsilon = c.Float("epsilon", 1e-5f);
        var mean = x.mean(axes, keepdim: true);
        var centred = x.sub(mean);
        var variance = (centred * centred).mean(axes, keepdim: true);
        var inverse = (variance + epsilon).rsqrt();
        var y = centred * inverse * c.Input(1);
        if (c.Optional(2) is { } bias)
        {
            y = y.add(bias, LibTorch.One);
        }

        // Optional outputs: the mean and the inverse standard deviation.
        return c.OutputCount switch
        {
            1 => [y],
            2 => [y, mean],
            _ => [y, mean, inverse],
        };
    }

    // Normalizes each (sample, channel) over its spatial axes.
    private static Tensor[] InstanceNormalization(OpContext c)
    {
        var x = c.Input(0);
        var axes = Enumerable.Range(2, (int)x.dim() - 2).Select(a => (long)a).ToArray();
        var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        shape[1] = -1;
        var mean = x.mean(axes, keepdim: true);
        var centred = x.sub(mean);
        var variance = (centred * centred).mean(axes, keepdim: true);
        var y = (centred / (variance + c.Float("epsilon", 1e-5f)).sqrt() * c.Input(1).reshape(shape)).add(c.Input(2).reshape(shape), LibTorch.One);
        return [y];
    }

    // Inference: the identity; the optional mask output is all true.
    private static Tensor[] Dropout(OpContext c)
    {
        var x = c.Input(0);
        return c.OutputCount > 1 ? [x, ones_like(x, ScalarType.Bool)] : [x];
    }
}
