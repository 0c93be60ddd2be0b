using Google.Protobuf;
using QuantTasks.Blob;
using QuantTasks.Data;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Engine.Training;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Tests;
using QuantTasks.Weights;
using TorchSharp;
using F = TorchSharp.torch.nn.functional;

namespace QuantTasks.Engine.Tests.Training;

/// <summary>
/// Ground truth for fine-tuning's gradients: each shared value's gradient against the per-weight gradients of
/// the same model at the same weights (the sum Deep Compression's centroid update uses) and against finite
/// differences of the loss, and one optimizer step on a tiny model against an update computed by hand.
/// </summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class SharedValueGradientTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public SharedValueGradientTests() => LibTorch.EnsureLoaded();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void A_codebook_level_of_LeNet_gets_the_sum_of_its_weights_gradients()
    {
        var (model, weights, x, y) = LeNet();
        var values = model.ReadFloats(model.FindTensor("fc2.weight")!);
        var sorted = values.Order().ToArray();
        var levels = Enumerable.Range(0, 8).Select(k => sorted[(int)((k + 0.5) / 8 * sorted.Length)]).ToArray();
        var symbols = values.Select(v => (byte)Enumerable.Range(0, 8).MinBy(k => Math.Abs(levels[k] - v))).ToArray();
        var quantized = QuantizedTensor.Codebook("fc2.weight", [84, 120], 3, -1, levels, symbols, "kmeans");
        using var graph = TorchGraph.Compile(model, weights, torch.CPU);
        using var trainable = TrainableTensor.For(StoredTensor.Of(quantized, 1), torch.CPU);
        var unit = levels.Max(Math.Abs);

        // Through the shared levels (trained in units of the largest level).
        var loss = Loss(graph, x, y, new() { ["fc2.weight"] = trainable.Weight() });
        var levelGradients = torch.autograd.grad([loss], [trainable.Parameters[0]])[0].data<float>().Select(g => (double)g / unit).ToArray();

        // Per weight, with the float leaf holding the same reconstructed values.
        var leaf = graph.Weights.Single(w => w.Weight.Name == "fc2.weight").Parameter;
        using (torch.no_grad())
        {
            leaf.copy_(torch.tensor(quantized.Dequantize(), [84, 120]));
        }

        var weightGradients = torch.autograd.grad([Loss(graph, x, y)], [leaf])[0].data<float>().ToArray();
        var sums = new double[8];
        for (var i = 0; i < symbols.Length; i++)
        {
            sums[symbols[i]] += weightGradients[i];
        }

        var scale = sums.Max(Math.Abs);
        for (var s = 0; s < 8; s++)
        {
            Assert.True(Math.Abs(levelGradients[s] - sums[s]) <= 1e-4 * scale, $"level {s}: {levelGradients[s]} against the sum {sums[s]}");
        }
    }

    [Fact]
    public void On_a_small_model_finite_differences_of_the_loss_agree_with_each_levels_gradient()
    {
        // The tiny Gemm classifier is smooth (no ReLU kinks), so central differences are accurate to h^2.
        float[] levels = [-0.6f, -0.2f, 0.3f, 0.8f];
        byte[] symbols = [0, 1, 2, 3, 2, 1];
        float[] x = [0.5f, -1f, 2f, 1.5f, 0.25f, -0.5f, -1f, 1f, 0.75f, 0.2f, 0.4f, -1.2f];
        using var inputs = torch.tensor(x, [4, 3]);
        using var labels = torch.tensor(new long[] { 0, 1, 1, 0 }, torch.ScalarType.Int64);
        var model = TinyGemm(symbols.Select(s => levels[s]).ToArray(), [0.1f, -0.1f]);
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var quantized = QuantizedTensor.Codebook("W", [2, 3], 2, -1, levels, symbols, "kmeans");
        using var trainable = TrainableTensor.For(StoredTensor.Of(quantized, 1), torch.CPU);
        var loss = Loss(graph, inputs, labels, new() { ["W"] = trainable.Weight() });
        var gradients = torch.autograd.grad([loss], [trainable.Parameters[0]])[0].data<float>().Select(g => g / 0.8).ToArray();

        double LossWith(float[] w)
        {
            using var _ = torch.no_grad();
            using var weights = torch.tensor(w, [2, 3]);
            return Loss(graph, inputs, labels, new() { ["W"] = weights }).item<float>();
        }

        const float h = 1e-2f;
        for (var s = 0; s < 4; s++)
        {
            // The level moved: every weight that uses it moves with it.
            var plus = LossWith(symbols.Select(k => levels[k] + (k == s ? h : 0)).ToArray());
            var minus = LossWith(symbols.Select(k => levels[k] - (k == s ? h : 0)).ToArray());
            var levelDifference = (plus - minus) / (2 * h);

            // The sum of the per-weight finite differences over the weights that use it.
            double sum = 0;
            for (var i = 0; i < 6; i++)
            {
                if (symbols[i] == s)
                {
                    var w = symbols.Select(k => levels[k]).ToArray();
                    w[i] += h;
                    var up = LossWith(w);
                    w[i] -= 2 * h;
                    sum += (up - LossWith(w)) / (2 * h);
                }
            }

            Assert.Equal(levelDifference, gradients[s], 1e-3);
            Assert.Equal(sum, gradients[s], 1e-3);
        }
    }

    [Fact]
    public void A_uniform_grid_trains_its_scale_and_offset_by_the_chain_rule_and_keeps_a_zero_level_at_zero()
    {
        var (model, weights, x, y) = LeNet();
        var values = model.ReadFloats(model.FindTensor("fc2.weight")!);
        var symbols = new byte[values.Length];
        var parameters = new float[84 * 2];
        for (var c = 0; c < 84; c++)
        {
            var row = values.AsSpan(c * 120, 120);
            var (min, max) = (Math.Min(0, row.ToArray().Min()), Math.Max(0, row.ToArray().Max()));
            var scale = (max - min) / 15;
            var z = (int)Math.Round(-min / scale);
            // Even channels keep zero as a level (offset = -z scale, as pruned tensors do); odd ones do not.
            var offset = c % 2 == 0 ? -(z * scale) : min;
            parameters[2 * c] = scale;
            parameters[(2 * c) + 1] = offset;
            for (var i = 0; i < 120; i++)
            {
                symbols[(c * 120) + i] = (byte)Math.Clamp(Math.Round((row[i] - offset) / scale), 0, 15);
            }
        }

        var quantized = QuantizedTensor.Uniform("fc2.weight", [84, 120], 4, 0, parameters, symbols, "uniform");
        using var graph = TorchGraph.Compile(model, weights, torch.CPU);
        using var trainable = TrainableTensor.For(StoredTensor.Of(quantized, 1), torch.CPU);
        var loss = Loss(graph, x, y, new() { ["fc2.weight"] = trainable.Weight() });
        var gradients = torch.autograd.grad([loss], trainable.Parameters.Cast<torch.Tensor>().ToList());
        var logScale = gradients[0].data<float>().ToArray();
        var offsetSteps = gradients[1].data<float>().ToArray();

        var leaf = graph.Weights.Single(w => w.Weight.Name == "fc2.weight").Parameter;
        using (torch.no_grad())
        {
            leaf.copy_(torch.tensor(quantized.Dequantize(), [84, 120]));
        }

        var g = torch.autograd.grad([Loss(graph, x, y)], [leaf])[0].data<float>().ToArray();
        for (var c = 0; c < 84; c++)
        {
            var (scale, offset) = (parameters[2 * c], parameters[(2 * c) + 1]);
            var zeroLevel = c % 2 == 0 ? (int)Math.Round(-offset / scale) : 0;
            double dScale = 0, dOffset = 0;
            for (var i = 0; i < 120; i++)
            {
                // d w / d scale = symbol (minus z where the offset follows the scale); d w / d offset = 1.
                dScale += g[(c * 120) + i] * (symbols[(c * 120) + i] - zeroLevel);
                dOffset += g[(c * 120) + i];
            }

            // scale = s0 exp(rho): d/d rho = s0 d/d scale; offset = o0 + s0 beta: d/d beta = s0 d/d offset (0 when tied).
            Assert.Equal(scale * dScale, logScale[c], 1e-5 * (1 + Math.Abs(scale * dScale)) * 10);
            Assert.Equal(c % 2 == 0 ? 0 : scale * dOffset, offsetSteps[c], 1e-5 * (1 + Math.Abs(scale * dOffset)) * 10);
        }

        // After moving the scales, the tied channels' zero level is still exactly zero in the stored grid.
        using (torch.no_grad())
        {
            trainable.Parameters[0].add_(0.1f);
        }

        var stored = trainable.ToStored().Quantized!;
        var decoded = stored.Dequantize();
        for (var i = 0; i < symbols.Length; i++)
        {
            var c = i / 120;
            if (c % 2 == 0 && symbols[i] == (int)Math.Round(-parameters[(2 * c) + 1] / parameters[2 * c]))
            {
                Assert.Equal(0f, decoded[i]);
            }
        }
    }

    [Fact]
    public void One_SGD_step_on_a_tiny_model_is_the_update_computed_by_hand()
    {
        // logits = x W^T + b with W [2, 3] a 2-bit per-tensor codebook; cross-entropy, one batch of four samples.
        float[] levels = [-0.6f, -0.2f, 0.3f, 0.8f];
        byte[] symbols = [0, 1, 2, 3, 2, 1];
        float[] bias = [0.1f, -0.1f];
        float[] x = [0.5f, -1f, 2f, 1.5f, 0.25f, -0.5f, -1f, 1f, 0.75f, 0.2f, 0.4f, -1.2f];
        long[] labels = [0, 1, 1, 0];
        const double rate = 0.1;
        var model = TinyGemm(symbols.Select(s => levels[s]).ToArray(), bias);
        NpzWriter.Write(_folder.File("train.npz"), ("input", NpzWriter.Floats([4, 3], x)), ("label", NpzWriter.Longs(labels)));
        var options = new FinetuneOptions
        {
            Epochs = 1, BatchSize = 4, LearningRate = rate, Optimizer = FinetuneOptimizer.Sgd, Momentum = 0,
            Schedule = LearningRateSchedule.Constant, Validation = 0, Loss = FinetuneLoss.CrossEntropy, Patience = 0,
        };

        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var file = DataFile.Load(_folder.File("train.npz"));
        var data = new TrainingData(graph, file, 0, 0, torch.CPU);
        var objective = TrainingObjective.For(model, "logits", options, hasLabels: true, file.Path);
        using var weight = TrainableTensor.For(StoredTensor.Of(QuantizedTensor.Codebook("W", [2, 3], 2, -1, levels, symbols, "kmeans"), 1), torch.CPU);
        using var b = new FreeValues("b", [2], bias, torch.CPU, 1, inCatalog: false);
        new FineTuner(graph, objective, data, options).Run([weight, b], [[weight, b]], null, null, CancellationToken.None);

        // By hand: p = softmax(x W^T + b); dL/dlogits = (p - onehot) / n; dL/dW = that^T x; a level's gradient is
        // the sum over its weights; the trained parameter is level / u (u = the largest |level|), so SGD moves
        // the level by -rate u^2 g.
        var w = symbols.Select(s => (double)levels[s]).ToArray();
        var gradW = new double[6];
        var gradB = new double[2];
        for (var n = 0; n < 4; n++)
        {
            var logits = new double[2];
            for (var o = 0; o < 2; o++)
            {
                logits[o] = bias[o] + Enumerable.Range(0, 3).Sum(k => w[(o * 3) + k] * x[(n * 3) + k]);
            }

            var m = logits.Max();
            var e = logits.Select(v => Math.Exp(v - m)).ToArray();
            for (var o = 0; o < 2; o++)
            {
                var d = ((e[o] / e.Sum()) - (labels[n] == o ? 1 : 0)) / 4;
                gradB[o] += d;
                for (var k = 0; k < 3; k++)
                {
                    gradW[(o * 3) + k] += d * x[(n * 3) + k];
                }
            }
        }

        var unit = 0.8;
        var expected = levels.Select((l, s) => l - (rate * unit * unit * Enumerable.Range(0, 6).Where(i => symbols[i] == s).Sum(i => gradW[i]))).ToArray();
        var trained = weight.ToStored().Quantized!.Dequantize();
        for (var i = 0; i < 6; i++)
        {
            Assert.Equal(expected[symbols[i]], trained[i], 1e-6);
        }

        var trainedBias = b.TrainedValues();
        for (var o = 0; o < 2; o++)
        {
            Assert.Equal(bias[o] - (rate * gradB[o]), trainedBias[o], 1e-6);
        }
    }

    private static torch.Tensor Loss(TorchGraph graph, torch.Tensor x, torch.Tensor y, Dictionary<string, torch.Tensor>? weights = null) =>
        F.cross_entropy(graph.Forward(new Dictionary<string, torch.Tensor> { [graph.InputNames[0]] = x }, [graph.OutputNames[0]], weights)[0], y);

    private static (OnnxModel Model, IReadOnlyList<WeightTensor> Weights, torch.Tensor X, torch.Tensor Y) LeNet()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));
        var input = data.Get("input");
        var x = torch.tensor(input.Floats!.AsSpan(0, 64 * 784).ToArray(), [64, 1, 28, 28]);
        var y = torch.tensor(data.Labels()!.AsSpan(0, 64).ToArray(), torch.ScalarType.Int64);
        return (model, WeightCatalog.Find(model), x, y);
    }

    private OnnxModel TinyGemm(float[] w, float[] b)
    {
        static TensorProto Tensor(string name, long[] dims, float[] values)
        {
            var bytes = new byte[values.Length * 4];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            return new TensorProto { Name = name, DataType = 1, Dims = { dims }, RawData = ByteString.CopyFrom(bytes) };
        }

        static ValueInfoProto Value(string name, long width) => new()
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "n" }, new TensorShapeProto.Types.Dimension { DimValue = width } } } } },
        };

        var graph = new GraphProto
        {
            Name = "tiny",
            Input = { Value("input", 3) },
            Output = { Value("logits", 2) },
            Initializer = { Tensor("W", [2, 3], w), Tensor("b", [2], b) },
            Node = { new NodeProto { OpType = "Gemm", Input = { "input", "W", "b" }, Output = { "logits" }, Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } } },
        };
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 17 } } };
        var path = _folder.File("tiny.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        return OnnxModel.Load(path);
    }
}
