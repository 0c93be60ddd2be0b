using Google.Protobuf;
using QuantTasks.Compensation;
using QuantTasks.Data;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Core.Tests.Compensation;

/// <summary>
/// Layer Hessians against ONNX Runtime's own forward pass: for every layer, sum_r w_r^T H w_r must equal the sum
/// of squares of the layer's output without its bias, which ONNX Runtime computes (im2col, groups, strides and
/// pads included) with no code of ours.
/// </summary>
public sealed class LayerHessiansTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void LeNet_layers_match_the_output_energy_onnx_runtime_computes()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));
        var weights = WeightCatalog.Find(model);

        var hessians = LayerHessians.Compute(model, weights, data, samples: 24, batchSize: 10);

        Assert.Equal(weights.Count, hessians.Count);
        foreach (var weight in weights)
        {
            AssertEnergy(model, data, weight, hessians[weight.Name], 24);
        }
    }

    /// <summary>
    /// A large network's Hessians are computed in passes that each hold a bounded share of the sums (each pass runs
    /// the graph only up to its layers): every layer's sums are those of one pass over all layers, to the last bit,
    /// and each layer is handed over once, in graph order, when its pass ends. ResNet-bn has skip connections (the
    /// cut graph must keep both branches of a block), the MobileNet-style model depthwise groups; the batch size of
    /// 40 leaves 100 samples in uneven batches.
    /// </summary>
    /// <remarks>
    /// The last cases bound a batch's layer inputs to 200 KB, as 64 MB bounds them for ResNet-50 at 224 x 224: the
    /// batches of a single pass are then smaller than a pass over a few layers would take for itself.
    /// </remarks>
    [Theory]
    [InlineData("resnet-bn.onnx", 0L, LayerHessians.MaxActivationBytes)]
    [InlineData("resnet-bn.onnx", 40_000L, LayerHessians.MaxActivationBytes)]
    [InlineData("mobilenet-dw.onnx", 0L, LayerHessians.MaxActivationBytes)]
    [InlineData("lenet5.onnx", 100_000L, LayerHessians.MaxActivationBytes)]
    [InlineData("resnet-bn.onnx", 0L, 200_000L)]
    [InlineData("mobilenet-dw.onnx", 0L, 200_000L)]
    [InlineData("lenet5.onnx", 0L, 40_000L)]
    [InlineData("mlp.onnx", 0L, 20_000L)]
    public void Passes_that_hold_part_of_the_sums_give_the_sums_of_one_pass(string file, long maxHeldBytes, long maxActivationBytes)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));
        var data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));
        var weights = WeightCatalog.Find(model).Where(w => w.Shape.Count > 1).ToArray();
        var finished = new List<string>();

        var whole = LayerHessians.Compute(model, weights, data, samples: 100, batchSize: 40, maxActivationBytes: maxActivationBytes);
        var passes = LayerHessians.Compute(model, weights, data, samples: 100, batchSize: 40,
            passes: new HessianPasses(maxHeldBytes, h => finished.Add(h.Weight)), maxActivationBytes: maxActivationBytes);

        Assert.True(whole.Count >= 3, $"{whole.Count} layers");
        Assert.Equal(whole.Keys, passes.Keys);
        Assert.Equal(LayerHessians.InGraphOrder(model, weights).Select(w => w.Name), finished);
        Assert.True(whole.Values.Sum(h => h.Bytes) > maxHeldBytes * 2, "more than two passes");
        foreach (var (name, expected) in whole)
        {
            var actual = passes[name];
            Assert.Equal(expected.Vectors, actual.Vectors);
            Assert.Equal(expected.PerGroup.Length, actual.PerGroup.Length);
            for (var g = 0; g < expected.PerGroup.Length; g++)
            {
                Assert.Equal(expected.PerGroup[g].ToDense(), actual.PerGroup[g].ToDense());
            }
        }
    }

    [Theory]
    [InlineData(1, 1, 0, 1)]
    [InlineData(2, 2, 1, 1)]
    [InlineData(4, 1, 1, 2)]
    public void Grouped_strided_padded_and_dilated_convolutions_match(int group, int stride, int pad, int dilation)
    {
        var model = ConvModel(group, stride, pad, dilation);
        var values = Enumerable.Range(0, 3 * 4 * 7 * 7).Select(i => (float)Math.Sin(i * 0.37)).ToArray();
        NpzWriter.Write(_folder.File("x.npz"), ("input", NpzWriter.Floats([3, 4, 7, 7], values)));
        var data = DataFile.Load(_folder.File("x.npz"));
        var weights = WeightCatalog.Find(model);

        var hessians = LayerHessians.Compute(model, weights, data, samples: 3, batchSize: 2);

        var conv = Assert.Single(hessians.Values);
        Assert.Equal(group, conv.Groups);
        AssertEnergy(model, data, weights.Single(w => w.Name == "w"), conv, 3);
    }

    /// <summary>Fixture layers, quantizer, bits and sparsity for the tests on real layers.</summary>
    public static TheoryData<string, string, int, double> RealLayers => new()
    {
        { "lenet5.onnx", QuantizationMethods.Uniform, 3, 0.0 },
        { "lenet5.onnx", QuantizationMethods.Kmeans, 2, 0.5 },
        { "mlp.onnx", QuantizationMethods.Uniform, 2, 0.0 },
        { "mlp.onnx", QuantizationMethods.Ecsq, 3, 0.3 },
    };

    [Theory]
    [MemberData(nameof(RealLayers))]
    public void Compensation_never_raises_the_output_error_of_real_layers(string file, string method, int bits, double sparsity)
    {
        foreach (var (weight, values, mask, plain, hessian) in PlainLayers(file, method, bits, sparsity))
        {
            var compensated = Compensator.Apply(plain, values, mask, hessian, new CompensationOptions(Mask: MaskSelection.Magnitude));
            var bySaliency = Compensator.Apply(plain, values, mask, hessian, new CompensationOptions());

            var before = Energy(hessian, values, plain.Dequantize());
            var after = Energy(hessian, values, compensated.Dequantize());
            Assert.Equal(before, hessian.OutputError(values, plain.Dequantize()), before * 1e-9);
            Assert.True(after <= before * (1 + 1e-6), $"{weight.Name}: compensated {after}, plain {before}");
            Assert.Equal(plain.Parameters, compensated.Parameters);

            // Uniform ranges clipped to the layer: other levels, never a larger output error than plain rounding.
            var clipped = Compensator.Apply(plain, values, mask, hessian, new CompensationOptions(ClipRanges: true));
            Assert.True(Energy(hessian, values, clipped.Dequantize()) <= before * (1 + 1e-6), $"{weight.Name}: clipped ranges above plain");
            if (method != QuantizationMethods.Uniform)
            {
                Assert.Equal(plain.Parameters, clipped.Parameters);
            }
            Assert.True(Energy(hessian, values, bySaliency.Dequantize()) <= before * (1 + 1e-6), $"{weight.Name}: saliency mask above plain");
            if (mask is not null)
            {
                // The magnitude mask is kept as it is; saliency prunes as many weights, chosen while compensating.
                var reconstructed = compensated.Dequantize();
                Assert.All(Enumerable.Range(0, mask.Length).Where(i => mask[i]), i => Assert.Equal(0f, reconstructed[i]));
                Assert.True(bySaliency.Dequantize().Count(v => v == 0) >= mask.Count(m => m));
            }
        }
    }

    [Theory]
    [MemberData(nameof(RealLayers))]
    public void Auto_order_keeps_whichever_order_rounds_the_layer_better(string file, string method, int bits, double sparsity)
    {
        var differed = 0;
        foreach (var (weight, values, mask, plain, hessian) in PlainLayers(file, method, bits, sparsity))
        {
            var natural = Compensator.Apply(plain, values, mask, hessian, new CompensationOptions(Order: ColumnOrder.Natural));
            var descending = Compensator.Apply(plain, values, mask, hessian, new CompensationOptions(Order: ColumnOrder.DescendingHessianDiagonal));
            var auto = Compensator.Apply(plain, values, mask, hessian, new CompensationOptions(Order: ColumnOrder.Auto));

            // Always one of the two results, symbol for symbol; without a rate term, the one with the smaller output error.
            Assert.True(auto.Symbols.SequenceEqual(natural.Symbols) || auto.Symbols.SequenceEqual(descending.Symbols), $"{weight.Name}: neither order's result");
            differed += natural.Symbols.SequenceEqual(descending.Symbols) ? 0 : 1;
            if (method != QuantizationMethods.Ecsq)
            {
                var best = Math.Min(Energy(hessian, values, natural.Dequantize()), Energy(hessian, values, descending.Dequantize()));
                Assert.Equal(best, Energy(hessian, values, auto.Dequantize()), best * 1e-12);
            }
        }

        Assert.True(differed > 0, "the two orders never differed, so the test chose nothing");
    }

    // Every layer of a fixture with its float values, magnitude mask, plain quantization and Hessian (64 samples).
    private static IEnumerable<(WeightTensor Weight, float[] Values, bool[]? Mask, QuantizedTensor Plain, LayerHessian Hessian)> PlainLayers(
        string file, string method, int bits, double sparsity)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));
        var data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));
        var weights = WeightCatalog.Find(model);
        var hessians = LayerHessians.Compute(model, weights, data, samples: 64);
        foreach (var weight in weights)
        {
            var values = model.ReadFloats(model.FindTensor(weight.Name)!);
            var mask = sparsity > 0 ? MagnitudePruning.PerTensor(values, sparsity) : null;
            var prepared = PreparedTensor.Create(weight.Name, values, weight.Shape, weight.OutputChannelAxis, pruned: mask);
            yield return (weight, values, mask, TensorQuantizer.Quantize(prepared, method, bits, new QuantizerSettings()), hessians[weight.Name]);
        }
    }

    // sum_r (w_r - q_r)^T H (w_r - q_r): the layer's output error on the calibration samples.
    // The difference in float64, where it is exact.
    private static double Energy(LayerHessian hessian, float[] original, float[] rounded) =>
        Quadratic(hessian, original.Zip(rounded, (a, b) => (double)a - b).ToArray());

    private static double Quadratic(LayerHessian hessian, double[] w)
    {
        double total = 0;
        var perGroup = hessian.Rows / hessian.Groups;
        for (var r = 0; r < hessian.Rows; r++)
        {
            var h = hessian.PerGroup[r / perGroup];
            double Element(int j) => hessian.Transposed ? w[(j * hessian.Rows) + r] : w[(r * hessian.Columns) + j];
            for (var a = 0; a < hessian.Columns; a++)
            {
                var ea = Element(a);
                if (ea == 0)
                {
                    continue;
                }

                for (var b = 0; b < hessian.Columns; b++)
                {
                    total += ea * h[a, b] * Element(b);
                }
            }
        }

        return total;
    }

    private static void AssertEnergy(OnnxModel model, DataFile data, WeightTensor weight, LayerHessian hessian, int samples)
    {
        var node = model.Graph.Node.First(n => n.Input.Count > 1 && n.Input[1] == weight.Name);
        var proto = model.Proto.Clone();
        proto.Graph.Output.Add(new ValueInfoProto { Name = node.Output[0], Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        var bias = node.Input.Count > 2 ? model.ReadFloats(model.FindTensor(node.Input[2])!) : null;
        double energy = 0;
        ModelEvaluator.Stream(proto.ToByteArray(), data, [node.Output[0]], model.Path, samples, 7, batch =>
        {
            var (values, shape) = batch[node.Output[0]];
            var channelAxis = node.OpType == "Conv" ? 1 : shape.Length - 1;
            var inner = shape.Skip(channelAxis + 1).Aggregate(1L, (a, b) => a * b);
            for (var i = 0; i < values.Length; i++)
            {
                var channel = (int)(i / inner % shape[channelAxis]);
                double y = values[i] - (bias?[channel] ?? 0);
                energy += y * y;
            }
        });

        var predicted = Quadratic(hessian, model.ReadFloats(model.FindTensor(weight.Name)!).Select(v => (double)v).ToArray());

        Assert.True(Math.Abs(predicted - energy) <= 1e-4 * Math.Max(1, energy), $"{weight.Name}: x^T H x gives {predicted}, ONNX Runtime's output {energy}");
    }

    private static OnnxModel ConvModel(int group, int stride, int pad, int dilation)
    {
        var random = new Random(group + (10 * stride) + (100 * pad) + (1000 * dilation));
        var w = Enumerable.Range(0, 8 * (4 / group) * 9).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var bytes = new byte[w.Length * 4];
        Buffer.BlockCopy(w, 0, bytes, 0, bytes.Length);
        var graph = new GraphProto { Name = "conv" };
        graph.Input.Add(Value("input", 3, 4, 7, 7));
        graph.Output.Add(new ValueInfoProto { Name = "output", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        graph.Initializer.Add(new TensorProto { Name = "w", DataType = 1, Dims = { 8, 4 / group, 3, 3 }, RawData = ByteString.CopyFrom(bytes) });
        var node = new NodeProto { OpType = "Conv", Name = "conv", Input = { "input", "w" }, Output = { "output" } };
        node.Attribute.Add(new AttributeProto { Name = "group", Type = AttributeProto.Types.AttributeType.Int, I = group });
        node.Attribute.Add(new AttributeProto { Name = "strides", Type = AttributeProto.Types.AttributeType.Ints, Ints = { stride, stride } });
        node.Attribute.Add(new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { pad, pad, pad, pad } });
        node.Attribute.Add(new AttributeProto { Name = "dilations", Type = AttributeProto.Types.AttributeType.Ints, Ints = { dilation, dilation } });
        graph.Node.Add(node);
        var proto = new ModelProto { IrVersion = 8, Graph = graph };
        proto.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        var path = Path.Combine(Path.GetTempPath(), "quanttasks-tests", $"conv-{Guid.NewGuid():N}.onnx");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, proto.ToByteArray());
        return OnnxModel.Load(path);
    }

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        var type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto() } };
        type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
        foreach (var d in dims.Skip(1))
        {
            type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        }

        return new ValueInfoProto { Name = name, Type = type };
    }
}
