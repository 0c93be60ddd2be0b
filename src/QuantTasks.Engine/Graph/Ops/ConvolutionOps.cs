using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QuantTasks.Engine.Graph.Ops;

/// <summary>Convolutions and pooling over 1 to 3 spatial axes, with ONNX's padding rules (explicit, asymmetric, auto_pad).</summary>
internal static class ConvolutionOps
{
    public static void Register(Dictionary<string, OpImplementation> ops)
    {
        ops["Conv"] = Conv;
        ops["ConvTranspose"] = ConvTranspose;
        ops["MaxPool"] = c => [Pool(c, max: true)];
        ops["AveragePool"] = c => [Pool(c, max: false)];
        ops["GlobalAveragePool"] = c => [c.Input(0).mean(SpatialAxes(c.Input(0)), keepdim: true)];
        ops["GlobalMaxPool"] = c => [c.Input(0).amax(SpatialAxes(c.Input(0)), keepdim: true)];
    }

    private static long[] SpatialAxes(Tensor x) => Enumerable.Range(2, (int)x.dim() - 2).Select(i => (long)i).ToArray();

    private static Tensor[] Conv(OpContext c)
    {
        var x = c.Input(0);
        var w = c.Input(1);
        var b = c.Optional(2);
        var spatial = (int)x.dim() - 2;
        var kernel = c.Ints("kernel_shape") ?? w.shape.Skip(2).ToArray();
        var strides = c.Ints("strides") ?? Ones(spatial);
        var dilations = c.Ints("dilations") ?? Ones(spatial);
        var groups = c.Int("group", 1);
        var pads = Pads(c, x.shape.Skip(2).ToArray(), kernel, strides, dilations);
        var (input, symmetric) = PadIfAsymmetric(x, pads, spatial, 0.0);
        return [spatial switch
        {
            1 => F.conv1d(input, w, b, strides[0], symmetric[0], dilations[0], groups),
            2 => F.conv2d(input, w, b, strides, symmetric, dilations, groups),
            3 => F.conv3d(input, w, b, strides, symmetric, dilations, groups),
            _ => throw c.Fail($"has {spatial} spatial axes; 1 to 3 are supported"),
        }];
    }

    private static Tensor[] ConvTranspose(OpContext c)
    {
        var x = c.Input(0);
        var w = c.Input(1);
        var b = c.Optional(2);
        var spatial = (int)x.dim() - 2;
        var kernel = c.Ints("kernel_shape") ?? w.shape.Skip(2).ToArray();
        var strides = c.Ints("strides") ?? Ones(spatial);
        var dilations = c.Ints("dilations") ?? Ones(spatial);
        var outputPadding = c.Ints("output_padding") ?? new long[spatial];
        var groups = c.Int("group", 1);
        var pads = c.Ints("pads") ?? new long[2 * spatial];
        var autoPad = c.String("auto_pad", "NOTSET");
        var inputShape = x.shape.Skip(2).ToArray();
        if (c.Ints("output_shape") is { } outputShape || autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            // The total padding follows from the requested output size (the output size of SAME is input * stride).
            var target = c.Ints("output_shape") is { } shape ? shape.TakeLast(spatial).ToArray() : inputShape.Select((d, i) => d * strides[i]).ToArray();
            pads = new long[2 * spatial];
            for (var i = 0; i < spatial; i++)
            {
                var total = (strides[i] * (inputShape[i] - 1)) + outputPadding[i] + (((kernel[i] - 1) * dilations[i]) + 1) - target[i];
                total = Math.Max(total, 0);
                var lowerFirst = autoPad == "SAME_LOWER";
                pads[i] = lowerFirst ? total - (total / 2) : total / 2;
                pads[i + spatial] = total - pads[i];
            }
        }

        // Transposed convolution with symmetric padding p crops p from both ends; crop the asymmetric rest after.
        var common = Enumerable.Range(0, spatial).Select(i => Math.Min(pads[i], pads[i + spatial])).ToArray();
        var y = spatial switch
        {
            1 => F.conv_transpose1d(x, w, b, strides[0], common[0], outputPadding[0], dilations[0], groups),
            2 => F.conv_transpose2d(x, w, b, strides, common, outputPadding, dilations, groups),
            3 => F.conv_transpose3d(x, w, b, strides, common, outputPadding, dilations, groups),
            _ => throw c.Fail($"has {spatial} spatial axes; 1 to 3 are supported"),
        };
        for (var i = 0; i < spatial; i++)
        {
            var begin = pads[i] - common[i];
            var end = pads[i + spatial] - common[i];
            if (begin > 0 || end > 0)
            {
                y = y.narrow(i + 2, begin, y.shape[i + 2] - begin - end);
            }
        }

        return [y];
    }

    private static Tensor Pool(OpContext c, bool max)
    {
        var x = c.Input(0);
        var spatial = (int)x.dim() - 2;
        var kernel = c.Ints("kernel_shape") ?? throw c.Fail("has no kernel_shape");
        var strides = c.Ints("strides") ?? Ones(spatial);
        var dilations = c.Ints("dilations") ?? Ones(spatial);
        var ceil = c.Int("ceil_mode", 0) != 0;
        var pads = Pads(c, x.shape.Skip(2).ToArray(), kernel, strides, dilations);
        if (max)
        {
            var (input, symmetric) = PadIfAsymmetric(x, pads, spatial, double.NegativeInfinity);
            return spatial switch
            {
                1 => F.max_pool1d(input, kernel[0], strides[0], symmetric[0], dilations[0], ceil),
                2 => F.max_pool2d(input, kernel, strides, symmetric, dilations, ceil),
                3 => F.max_pool3d(input, kernel, strides, symmetric, dilations, ceil),
                _ => throw c.Fail($"has {spatial} spatial axes; 1 to 3 are supported"),
            };
        }

        if (dilations.Any(d => d != 1))
        {
            throw c.Fail("uses dilations, which AveragePool does not support here");
        }

        var includePad = c.Int("count_include_pad", 0) != 0;
        var asymmetric = Enumerable.Range(0, spatial).Any(i => pads[i] != pads[i + spatial]);
        if (!asymmetric)
        {
            var p = pads.Take(spatial).ToArray();
            return spatial switch
            {
                1 => F.avg_pool1d(x, kernel[0], strides[0], p[0], ceil, includePad),
                2 => F.avg_pool2d(x, kernel, strides, p, ceil, includePad),
                3 => F.avg_pool3d(x, kernel, strides, p, ceil, includePad),
                _ => throw c.Fail($"has {spatial} spatial axes; 1 to 3 are supported"),
            };
        }

        // Asymmetric padding: pad explicitly, sum with count_include_pad, and divide by the true counts.
        var (padded, none) = PadIfAsymmetric(x, pads, spatial, 0.0);
        var ones = ones_like(x);
        var (paddedOnes, _) = PadIfAsymmetric(ones, pads, spatial, includePad ? 1.0 : 0.0);
        Tensor Sum(Tensor t) => spatial switch
        {
            1 => F.avg_pool1d(t, kernel[0], strides[0], none[0], ceil, true),
            2 => F.avg_pool2d(t, kernel, strides, none, ceil, true),
            _ => F.avg_pool3d(t, kernel, strides, none, ceil, true),
        };
        return Sum(padded) / Sum(paddedOnes);
    }

    /// <summary>ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end, ...], explicit or from auto_pad.</summary>
    internal static long[] Pads(OpContext c, long[] input, long[] kernel, long[] strides, long[] dilations)
    {
        var spatial = input.Length;
        var autoPad = c.String("auto_pad", "NOTSET");
        if (autoPad is "NOTSET")
        {
            return c.Ints("pads") ?? new long[2 * spatial];
        }

        var pads = new long[2 * spatial];
        if (autoPad == "VALID")
        {
            return pads;
        }

        for (var i = 0; i < spatial; i++)
        {
            var output = (input[i] + strides[i] - 1) / strides[i];
            var effectiveKernel = ((kernel[i] - 1) * dilations[i]) + 1;
            var total = Math.Max(0, ((output - 1) * strides[i]) + effectiveKernel - input[i]);
            var small = total / 2;
            pads[i] = autoPad == "SAME_LOWER" ? total - small : small;
            pads[i + spatial] = total - pads[i];
        }

        return pads;
    }

    /// <summary>
    /// Pads explicitly with <paramref name="value"/> where begin and end padding differ, and returns the
    /// symmetric padding left for the torch operator.
    /// </summary>
    internal static (Tensor Input, long[] Symmetric) PadIfAsymmetric(Tensor x, long[] pads, int spatial, double value)
    {
        var symmetric = new long[spatial];
        var explicitPads = new long[2 * spatial];
        var needed = false;
        for (var i = 0; i < spatial; i++)
        {
            symmetric[i] = Math.Min(pads[i], pads[i + spatial]);
            var begin = pads[i] - symmetric[i];
            var end = pads[i + spatial] - symmetric[i];
            // torch.nn.functional.pad lists the last axis first.
            explicitPads[2 * (spatial - 1 - i)] = begin;
            explicitPads[(2 * (spatial - 1 - i)) + 1] = end;
            needed |= begin != 0 || end != 0;
        }

        if (!needed)
        {
            return (x, symmetric);
        }

        if (value == 0)
        {
            return (F.pad(x, explicitPads), symmetric);
        }

        return (F.pad(x, explicitPads, TorchSharp.PaddingModes.Constant, value), symmetric);
    }

    private static long[] Ones(int count) => Enumerable.Repeat(1L, count).ToArray();
}
