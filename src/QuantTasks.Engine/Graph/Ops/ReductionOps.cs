using static TorchSharp.torch;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>Reductions and ArgMax; axes move from an attribute to an input at opset 13 (ReduceSum) or 18 (the others).</summary>
internal static class ReductionOps
{
    public static void Register(Dictionary<string, OpImplementation> ops)
    {
        ops["ReduceMean"] = c => [Reduce(c, 18, (x, axes, keep) => x.mean(axes, keep))];
        ops["ReduceSum"] = c => [Reduce(c, 13, (x, axes, keep) => x.sum(axes, keep))];
        ops["ReduceMax"] = c => [Reduce(c, 18, (x, axes, keep) => x.amax(axes, keep))];
        ops["ArgMax"] = ArgMax;
    }

    private static Tensor Reduce(OpContext c, long axesInputSince, Func<Tensor, long[], bool, Tensor> reduce)
    {
        var x = c.Input(0);
        var keep = c.Int("keepdims", 1) != 0;
        var axes = c.IntsFromAttributeOrInput("axes", 1, axesInputSince);
        if (axes is null || axes.Length == 0)
        {
            if (c.Int("noop_with_empty_axes", 0) != 0)
            {
                return x;
            }

            axes = Enumerable.Range(0, (int)x.dim()).Select(a => (long)a).ToArray();
        }

        var rank = x.dim();
        return reduce(x, axes.Select(a => a < 0 ? a + rank : a).ToArray(), keep);
    }

    private static Tensor[] ArgMax(OpContext c)
    {
        var x = c.Input(0);
        var axis = c.Int("axis", 0);
        var keep = c.Int("keepdims", 1) != 0;
        if (c.Int("select_last_index", 0) == 0)
        {
            return [x.argmax(axis, keep)];
        }

        // The last maximum: the first one of the input flipped along the axis.
        var rank = x.dim();
        var a = axis < 0 ? axis + rank : axis;
        var flipped = x.flip([a]).argmax(a, keep);
        return [(x.shape[a] - 1) - flipped];
    }
}
