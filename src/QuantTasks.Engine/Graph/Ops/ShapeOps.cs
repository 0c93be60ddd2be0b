using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>
/// Shape manipulation, indexing and tensor creation. Shapes, axes and indices arrive as int64 tensors (inputs
/// since opset 10 to 18, depending on the op) and are read to the host to build the torch call.
/// </summary>
internal static class ShapeOps
{
    public static void Register(Dictionary<string, OpImplementation> ops)
    {
        ops["Identity"] = c => [c.Input(0)];
        ops["Flatten"] = Flatten;
        ops["Reshape"] = Reshape;
        ops["Transpose"] = c => [c.Input(0).permute(c.Ints("perm") ?? Enumerable.Range(0, (int)c.Input(0).dim()).Reverse().Select(i => (long)i).ToArray())];
        ops["Squeeze"] = Squeeze;
        ops["Unsqueeze"] = Unsqueeze;
        ops["Concat"] = c => [cat(Enumerable.Range(0, c.InputCount).Select(c.Optional).Where(t => t is not null).ToArray()!, c.Int("axis", 0))];
        ops["Split"] = Split;
        ops["Slice"] = Slice;
        ops["Gather"] = Gather;
        ops["Shape"] = ShapeOf;
        ops["Constant"] = Constant;
        ops["ConstantOfShape"] = ConstantOfShape;
        ops["Cast"] = Cast;
        ops["Expand"] = Expand;
        ops["Tile"] = c => [c.Input(0).repeat(OpContext.Values(c.Input(1)))];
        ops["Range"] = Range;
        ops["Pad"] = Pad;
    }

    private static long Axis(long axis, long rank) => axis < 0 ? axis + rank : axis;

    private static Tensor[] Flatten(OpContext c)
    {
        var x = c.Input(0);
        var axis = Axis(c.Int("axis", 1), x.dim());
        var outer = x.shape.Take((int)axis).Aggregate(1L, (a, b) => a * b);
        return [x.reshape(outer, -1)];
    }

    private static Tensor[] Reshape(OpContext c)
    {
        var x = c.Input(0);
        var shape = c.Opset < 5 ? c.Ints("shape")! : OpContext.Values(c.Input(1));
        var allowZero = c.Int("allowzero", 0) != 0;
        for (var i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 0 && !allowZero)
            {
                // 0 copies the input's dimension at the same index.
                shape[i] = x.shape[i];
            }
        }

        return [x.reshape(shape)];
    }

    private static Tensor[] Squeeze(OpContext c)
    {
        var x = c.Input(0);
        var axes = c.IntsFromAttributeOrInput("axes", 1, 13);
        if (axes is null || axes.Length == 0)
        {
            return [x.reshape(x.shape.Where(d => d != 1).ToArray())];
        }

        var rank = x.dim();
        var drop = axes.Select(a => Axis(a, rank)).ToHashSet();
        return [x.reshape(x.shape.Where((_, i) => !drop.Contains(i)).ToArray())];
    }

    private static Tensor[] Unsqueeze(OpContext c)
    {
        var x = c.Input(0);
        var axes = c.IntsFromAttributeOrInput("axes", 1, 13) ?? throw c.Fail("has no axes");
        var rank = x.dim() + axes.Length;
        var inserted = axes.Select(a => Axis(a, rank)).ToHashSet();
        var shape = new long[rank];
        var source = 0;
        for (var i = 0; i < rank; i++)
        {
            shape[i] = inserted.Contains(i) ? 1 : x.shape[source++];
        }

        return [x.reshape(shape)];
    }

    private static Tensor[] Split(OpContext c)
    {
        var x = c.Input(0);
        var axis = Axis(c.Int("axis", 0), x.dim());
        var sizes = c.IntsFromAttributeOrInput("split", 1, 13);
        if (sizes is null || sizes.Length == 0)
        {
            // Equal parts; with num_outputs (opset 18) the last may be smaller.
            var parts = c.Int("num_outputs", c.OutputCount);
            var size = (x.shape[axis] + parts - 1) / parts;
            sizes = Enumerable.Range(0, (int)parts).Select(i => Math.Min(size, x.shape[axis] - (i * size))).ToArray();
        }

        return x.split(sizes, axis);
    }

    private static Tensor[] Slice(OpContext c)
    {
        var x = c.Input(0);
        long[] starts, ends;
        long[]? axes, steps;
        if (c.Opset < 10)
        {
            starts = c.Ints("starts")!;
            ends = c.Ints("ends")!;
            axes = c.Ints("axes");
            steps = null;
        }
        else
        {
            starts = OpContext.Values(c.Input(1));
            ends = OpContext.Values(c.Input(2));
            axes = c.Optional(3) is { } a ? OpContext.Values(a) : null;
            steps = c.Optional(4) is { } s ? OpContext.Values(s) : null;
        }

        var rank = x.dim();
        var y = x;
        for (var i = 0; i < starts.Length; i++)
        {
            var axis = Axis(axes?[i] ?? i, rank);
            var step = steps?[i] ?? 1;
            var dim = x.shape[axis];
            var start = starts[i] < 0 ? starts[i] + dim : starts[i];
            var end = ends[i] < 0 ? ends[i] + dim : ends[i];
            if (step > 0)
            {
                start = Math.Clamp(start, 0, dim);
                end = Math.Clamp(end, 0, dim);
                if (step == 1)
                {
                    y = y.narrow(axis, start, Math.Max(0, end - start));
                    continue;
                }
            }
            else
            {
                start = Math.Clamp(start, 0, dim - 1);
                end = Math.Clamp(end, -1, dim - 1);
            }

            var count = step > 0 ? Math.Max(0, (end - start + step - 1) / step) : Math.Max(0, (start - end + (-step) - 1) / -step);
            var indices = arange(start, start + (count * step), step, ScalarType.Int64, y.device);
            y = y.index_select(axis, indices);
        }

        return [y];
    }

    private static Tensor[] Gather(OpContext c)
    {
        var data = c.Input(0);
        var indices = c.Input(1).to(ScalarType.Int64);
        var axis = Axis(c.Int("axis", 0), data.dim());
        var dim = data.shape[axis];
        indices = where(indices < 0, indices + dim, indices);
        var picked = data.index_select(axis, indices.flatten());
        var shape = data.shape.Take((int)axis).Concat(indices.shape).Concat(data.shape.Skip((int)axis + 1)).ToArray();
        return [picked.reshape(shape)];
    }

    private static Tensor[] ShapeOf(OpContext c)
    {
        var shape = c.Input(0).shape;
        var rank = shape.Length;
        var start = Math.Clamp(Axis(c.Int("start", 0), rank), 0, rank);
        var end = Math.Clamp(Axis(c.Int("end", rank), rank), 0, rank);
        return [tensor(shape[(int)start..(int)Math.Max(start, end)], ScalarType.Int64, c.Input(0).device)];
    }

    private static Tensor[] Constant(OpContext c)
    {
        if (c.TensorAttribute("value") is { } value)
        {
            return [TorchTensors.FromProto(value, CPU)];
        }

        if (c.HasAttribute("value_float"))
        {
            return [tensor(c.Float("value_float", 0), ScalarType.Float32)];
        }

        if (c.Floats("value_floats") is { Length: > 0 } floats)
        {
            return [tensor(floats, ScalarType.Float32)];
        }

        if (c.HasAttribute("value_int"))
        {
            return [tensor(c.Int("value_int", 0), ScalarType.Int64)];
        }

        if (c.Ints("value_ints") is { } ints)
        {
            return [tensor(ints, ScalarType.Int64)];
        }

        throw c.Fail("holds a value of a kind the executor does not compute (strings or sparse tensors)");
    }

    private static Tensor[] ConstantOfShape(OpContext c)
    {
        var shape = OpContext.Values(c.Input(0));
        var value = c.TensorAttribute("value");
        var fill = value is null ? tensor(0f, ScalarType.Float32) : TorchTensors.FromProto(value, CPU).reshape(1)[0];
        return [fill.expand(shape).contiguous().to(c.Input(0).device)];
    }

    private static Tensor[] Cast(OpContext c)
    {
        var to = c.Int("to", 1);
        var type = TorchTensors.ScalarTypeOf(to) ?? throw c.Fail($"casts to ONNX type {to}, which the executor does not compute");
        return [c.Input(0).to(type)];
    }

    private static Tensor[] Expand(OpContext c)
    {
        var x = c.Input(0);
        var target = OpContext.Values(c.Input(1));
        var rank = Math.Max(x.dim(), target.Length);
        var input = Enumerable.Repeat(1L, (int)(rank - x.dim())).Concat(x.shape).ToArray();
        var wanted = Enumerable.Repeat(1L, (int)(rank - target.Length)).Concat(target).ToArray();
        var shape = input.Zip(wanted, (a, b) => a == 1 ? b : a).ToArray();
        return [x.reshape(input).expand(shape)];
    }

    private static Tensor[] Range(OpContext c)
    {
        var start = c.Input(0);
        if (start.is_floating_point())
        {
            var s = OpContext.DoubleValues(start)[0];
            var limit = OpContext.DoubleValues(c.Input(1))[0];
            var delta = OpContext.DoubleValues(c.Input(2))[0];
            var count = Math.Max((long)Math.Ceiling((limit - s) / delta), 0);
            return [(arange(0, count, 1, ScalarType.Float64) * delta + s).to(start.dtype)];
        }

        var first = OpContext.Values(start)[0];
        var end = OpContext.Values(c.Input(1))[0];
        var step = OpContext.Values(c.Input(2))[0];
        var n = Math.Max((end - first + step - (step > 0 ? 1 : -1)) / step, 0);
        return [arange(first, first + (n * step), step, ScalarType.Int64).to(start.dtype)];
    }

    private static Tensor[] Pad(OpContext c)
    {
        var x = c.Input(0);
        var rank = (int)x.dim();
        long[] pads;
        double value = 0;
        if (c.Opset < 11)
        {
            pads = c.Ints("pads")!;
            value = c.Float("value", 0);
        }
        else
        {
            pads = OpContext.Values(c.Input(1));
            if (c.Optional(2) is { } v && v.numel() > 0)
            {
                value = OpContext.DoubleValues(v)[0];
            }
        }

        var axes = c.Opset >= 18 && c.Optional(3) is { } a
            ? OpContext.Values(a).Select(axis => Axis(axis, rank)).ToArray()
            : Enumerable.Range(0, rank).Select(i => (long)i).ToArray();

        // ONNX: [begin of each axis..., end of each axis...]; torch: (begin, end) pairs from the last axis back.
        var full = new long[2 * rank];
        for (var i = 0; i < axes.Length; i++)
        {
            full[axes[i]] = pads[i];
            full[axes[i] + rank] = pads[i + axes.Length];
        }

        var torchPads = new long[2 * rank];
        for (var axis = 0; axis < rank; axis++)
        {
            torchPads[2 * (rank - 1 - axis)] = full[axis];
            torchPads[(2 * (rank - 1 - axis)) + 1] = full[axis + rank];
        }

        // Trailing axes with no padding are left out, since torch pads reflect and edge modes on few axes only.
        var used = torchPads.Length;
        while (used > 2 && torchPads[used - 1] == 0 && torchPads[used - 2] == 0)
        {
            used -= 2;
        }

        var mode = c.String("mode", "constant") switch
        {
            "reflect" => PaddingModes.Reflect,
            "edge" => PaddingModes.Replicate,
            "wrap" => PaddingModes.Circular,
            _ => PaddingModes.Constant,
        };
        return [F.pad(x, torchPads[..used], mode, value)];
    }
}
