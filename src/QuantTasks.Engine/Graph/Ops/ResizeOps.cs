using static TorchSharp.torch;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>
/// Resize (and its opset-10 form) in nearest and linear modes, written from the ONNX specification's
/// coordinate transforms so that every combination of coordinate_transformation_mode and nearest_mode agrees
/// with ONNX Runtime. Interpolation is separable: one axis at a time, by index selection and weighting.
/// </summary>
internal static class ResizeOps
{
    public static void Register(Dictionary<string, OpImplementation> ops) => ops["Resize"] = Resize;

    private static Tensor[] Resize(OpContext c)
    {
        var x = c.Input(0);
        var rank = (int)x.dim();
        var mode = c.String("mode", "nearest");
        if (mode is not ("nearest" or "linear"))
        {
            throw c.Fail($"uses mode '{mode}'; nearest and linear are supported");
        }

        var transform = c.String("coordinate_transformation_mode", c.Opset < 11 ? "asymmetric" : "half_pixel");
        if (transform is not ("half_pixel" or "pytorch_half_pixel" or "align_corners" or "asymmetric"))
        {
            throw c.Fail($"uses coordinate_transformation_mode '{transform}', which is not supported");
        }

        if (c.Int("antialias", 0) != 0 || c.HasAttribute("axes"))
        {
            throw c.Fail("uses antialias or axes (opset 18), which are not supported");
        }

        var nearestMode = c.String("nearest_mode", "round_prefer_floor");
        var input = x.shape;
        double[] scales;
        long[] output;
        var sizes = c.Opset >= 11 ? c.Optional(3) : null;
        if (sizes is not null && sizes.numel() > 0)
        {
            output = OpContext.Values(sizes);
            scales = output.Select((o, i) => (double)o / input[i]).ToArray();
        }
        else
        {
            var scaleTensor = c.Opset >= 11 ? c.Input(2) : c.Input(1);
            scales = OpContext.DoubleValues(scaleTensor);
            output = input.Select((d, i) => (long)Math.Floor(d * scales[i])).ToArray();
        }

        var y = x;
        for (var axis = 0; axis < rank; axis++)
        {
            if (output[axis] == input[axis] && scales[axis] == 1.0)
            {
                continue;
            }

            var source = Enumerable.Range(0, (int)output[axis])
                .Select(o => SourceCoordinate(o, scales[axis], input[axis], output[axis], transform))
                .ToArray();
            y = mode == "nearest"
                ? y.index_select(axis, tensor(source.Select(s => Nearest(s, nearestMode, input[axis])).ToArray(), ScalarType.Int64, y.device))
                : Linear(y, axis, source, input[axis]);
        }

        return [y];
    }

    private static double SourceCoordinate(long outIndex, double scale, long inLength, long outLength, string transform) => transform switch
    {
        "half_pixel" => ((outIndex + 0.5) / scale) - 0.5,
        "pytorch_half_pixel" => outLength > 1 ? ((outIndex + 0.5) / scale) - 0.5 : 0,
        "align_corners" => outLength == 1 ? 0 : outIndex * (inLength - 1) / (double)(outLength - 1),
        _ => outIndex / scale,
    };

    private static long Nearest(double coordinate, string mode, long length)
    {
        var index = mode switch
        {
            "round_prefer_ceil" => Math.Floor(coordinate + 0.5),
            "floor" => Math.Floor(coordinate),
            "ceil" => Math.Ceiling(coordinate),
            _ => coordinate == Math.Floor(coordinate) + 0.5 ? Math.Floor(coordinate) : Math.Round(coordinate),
        };
        return Math.Clamp((long)index, 0, length - 1);
    }

    private static Tensor Linear(Tensor x, int axis, double[] source, long length)
    {
        var low = new long[source.Length];
        var high = new long[source.Length];
        var weight = new float[source.Length];
        for (var i = 0; i < source.Length; i++)
        {
            var s = Math.Clamp(source[i], 0, length - 1);
            low[i] = (long)Math.Floor(s);
            high[i] = Math.Min(low[i] + 1, length - 1);
            weight[i] = (float)(s - low[i]);
        }

        var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        shape[axis] = source.Length;
        var w = tensor(weight, ScalarType.Float32, x.device).reshape(shape);
        var a = x.index_select(axis, tensor(low, ScalarType.Int64, x.device));
        var b = x.index_select(axis, tensor(high, ScalarType.Int64, x.device));
        return a + ((b - a) * w);
    }
}
