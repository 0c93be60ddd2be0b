using Google.Protobuf;
using QuantTasks.Data;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Evaluation;

public sealed class MeasuredLossTests
{
    private static readonly string[] s_weights = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"];

    private readonly OnnxModel _model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
    private readonly DataFile _data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));

    [Fact]
    public void A_tensor_replaced_by_its_own_values_changes_nothing()
    {
        using var measured = new MeasuredLoss(_model, _data, null, s_weights);
        var fc2 = _model.ReadFloats(_model.FindTensor("fc2.weight")!);

        Assert.Equal(0, measured.Increase("fc2.weight", fc2), 9);
    }

    [Fact]
    public void Zeroing_the_last_layer_leaves_the_bias_as_logits_and_the_increase_is_their_cross_entropy_minus_the_float_one()
    {
        using var measured = new MeasuredLoss(_model, _data, null, s_weights);
        var fc3 = _model.FindTensor("fc3.weight")!;
        var bias = _model.ReadFloats(_model.FindTensor("fc3.bias")!);
        var labels = _data.Labels()!;

        // Ground truth by hand: the float model's mean cross-entropy from its logits, and the bias-only one.
        var outputs = ModelEvaluator.Run(_model.ToBytes(), _data, null, _model.Path);
        static double CrossEntropy(ReadOnlySpan<float> logits, long label)
        {
            var max = double.NegativeInfinity;
            foreach (var v in logits)
            {
                max = Math.Max(max, v);
            }

            double total = 0;
            foreach (var v in logits)
            {
                total += Math.Exp(v - max);
            }

            return -(logits[(int)label] - max - Math.Log(total));
        }

        var floatLoss = Enumerable.Range(0, outputs.Samples).Average(i => CrossEntropy(outputs.Outputs.AsSpan(i * 10, 10), labels[i]));
        var biasOnly = labels.Average(label => CrossEntropy(bias, label));

        var increase = measured.Increase("fc3.weight", new float[fc3.Dims.Aggregate(1L, (a, d) => a * d)]);

        Assert.Equal(biasOnly - floatLoss, increase, 4);
        Assert.True(increase > 1);
    }

    [Fact]
    public void The_shared_session_measures_what_a_session_built_for_the_candidate_measures()
    {
        // The overridable-initializer path against the model rebuilt with the candidate's values (the reference). A
        // weight fed as an input is not prepacked by ONNX Runtime, so float32 sums may round differently: the losses
        // (about 0.05) agree to float32's precision, so increases agree to 1e-7 plus 1e-4 of their size.
        using var shared = new MeasuredLoss(_model, _data, null, s_weights);
        using var rebuilt = new MeasuredLoss(_model, _data, null, []);
        var random = new Random(11);
        foreach (var name in s_weights)
        {
            var values = _model.ReadFloats(_model.FindTensor(name)!).Select(v => v + (float)(0.05 * (random.NextDouble() - 0.5))).ToArray();

            var expected = rebuilt.Increase(name, values);
            var actual = shared.Increase(name, values);
            Assert.True(Math.Abs(actual - expected) <= (1e-4 * Math.Abs(expected)) + 1e-7, $"{name}: {actual} against {expected}");
        }

        Assert.Equal(s_weights.Length, shared.Throughput.Candidates);
    }

    /// <summary>
    /// A probe that runs only the part of the graph its tensor reaches, fed the frontier computed once, against the
    /// whole graph: LeNet-5 (a chain), its Constant-node export (promoted weights), the BatchNorm-folded ResNet (skip
    /// connections in the frontier) and PP-OCRv4's recognizer (shape arithmetic: int64 values in the frontier).
    /// Fused differently, the part's float32 sums may round differently: increases agree to 1e-4 of their size.
    /// </summary>
    [Theory]
    [InlineData("lenet5.onnx", "digits")]
    [InlineData("lenet5-constants.onnx", "digits")]
    [InlineData("resnet-bn.onnx", "digits")]
    [InlineData("ppocr/ch_PP-OCRv4_rec_infer.onnx", "lines")]
    public void A_candidate_measured_on_its_tensor_s_part_of_the_graph_measures_what_the_whole_graph_measures(string file, string data)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));
        var samples = data == "digits" ? _data : RandomLines(Path.Combine(Path.GetTempPath(), "quanttasks-tests", $"lines-{Guid.NewGuid():N}"));
        var weights = model.Graph.Node.Where(n => n.OpType is "Conv" or "Gemm" or "MatMul" && n.Input.Count > 1)
            .Select(n => n.Input[1]).Where(w => model.FindTensor(w) is { Dims.Count: > 1 }).ToArray();
        using var measured = new MeasuredLoss(model, samples, null, weights,
            data == "digits" ? null : new OutputLoss(OutputComparison.Probabilities, -1));
        var random = new Random(7);
        var onPart = 0;
        foreach (var name in weights.Where((_, i) => data == "digits" || i % 7 == 3))
        {
            var original = model.ReadFloats(model.FindTensor(name)!);
            var values = original.Select(v => v * (float)(1 + (0.2 * (random.NextDouble() - 0.5)))).ToArray();
            using var probe = measured.Probe(name, runs: 100);
            onPart += probe is CandidateProbe { OnPart: true } ? 1 : 0;

            var expected = measured.Increase(name, values);
            var actual = probe.Increase(values);

            Assert.True(Math.Abs(expected) > 1e-4, $"{name}: {expected}");
            Assert.True(Math.Abs(actual - expected) <= (1e-4 * Math.Abs(expected)) + 1e-7, $"{name}: {actual} on the part against {expected}");
            Assert.True(Math.Abs(probe.Increase(original)) <= (1e-4 * Math.Abs(expected)) + 1e-7, $"{name}: its own values");
        }

        // Every tensor but one that reads the data itself runs on its part.
        Assert.True(onPart >= 2, $"{onPart} probes ran on a part");
    }

    [Fact]
    public void Told_to_ignore_labels_the_loss_is_the_divergence_from_the_float_model_as_on_samples_without_them()
    {
        // calibrated-output-error measures so: cross-entropy against labels can fall when a tensor is rounded.
        var input = _data.Get("input");
        var folder = Path.Combine(Path.GetTempPath(), "quanttasks-tests", $"unlabelled-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        NpzWriter.Write(Path.Combine(folder, "x.npz"), ("input", NpzWriter.Floats([.. input.Shape], input.Floats!)));
        using var unlabelled = new MeasuredLoss(_model, DataFile.Load(Path.Combine(folder, "x.npz")), null, s_weights);
        using var ignoring = new MeasuredLoss(_model, _data, null, s_weights, labels: false);
        using var labelled = new MeasuredLoss(_model, _data, null, s_weights);
        var random = new Random(2);
        var fc2 = _model.ReadFloats(_model.FindTensor("fc2.weight")!).Select(v => v + (float)(0.05 * (random.NextDouble() - 0.5))).ToArray();

        Assert.Null(ignoring.Labels);
        Assert.Equal(unlabelled.Increase("fc2.weight", fc2), ignoring.Increase("fc2.weight", fc2), 12);
        Assert.NotEqual(labelled.Increase("fc2.weight", fc2), ignoring.Increase("fc2.weight", fc2), 6);
    }

    [Fact]
    public void A_frontier_larger_than_the_probe_may_hold_falls_back_to_the_whole_graph()
    {
        using var measured = new MeasuredLoss(_model, _data, null, s_weights) { MaxFrontierBytes = 1024 };
        var fc1 = _model.ReadFloats(_model.FindTensor("fc1.weight")!).Select(v => v * 0.9f).ToArray();

        using var probe = measured.Probe("fc1.weight", runs: 100);

        Assert.False(Assert.IsType<CandidateProbe>(probe).OnPart);
        Assert.Equal(measured.Increase("fc1.weight", fc1), probe.Increase(fc1), 12);
    }

    // Two recognizer-shaped lines of seeded noise (3 x 48 x 320): only the graph's arithmetic is compared.
    /// <summary>
    /// The search's measurements sum the loss batch by batch and keep no run's whole output; the joint check keeps
    /// the outputs for the gate. Both give the same figure to the last bit, over several batches, for every output
    /// form: LeNet-5's logits against labels and against the float model (512 digits, two batches), and a Softmax,
    /// a Sigmoid map and plain values of a tiny model on 600 samples (three batches).
    /// </summary>
    [Theory]
    [InlineData("labels")]
    [InlineData("logits")]
    [InlineData("Softmax")]
    [InlineData("Sigmoid")]
    [InlineData("")]
    public void A_loss_summed_batch_by_batch_equals_the_loss_of_the_whole_output(string form)
    {
        var folder = Path.Combine(Path.GetTempPath(), "quanttasks-tests", $"stream-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            var random = new Random(5);
            OnnxModel model;
            DataFile data;
            OutputLoss? loss = null;
            string name;
            if (form is "labels" or "logits")
            {
                (model, data, name) = (_model, _data, "conv2.weight");
            }
            else
            {
                var w = Enumerable.Range(0, 4 * 5).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
                model = TinyModel(Path.Combine(folder, "m.onnx"), w, form);
                NpzWriter.Write(Path.Combine(folder, "x.npz"),
                    ("x", NpzWriter.Floats([600, 3, 4], Enumerable.Range(0, 600 * 3 * 4).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray())));
                (data, name) = (DataFile.Load(Path.Combine(folder, "x.npz")), "w");
                loss = form switch
                {
                    "Softmax" => new OutputLoss(OutputComparison.Probabilities, -1),
                    "Sigmoid" => new OutputLoss(OutputComparison.BinaryProbabilities),
                    _ => new OutputLoss(OutputComparison.Values),
                };
            }

            using var measured = new MeasuredLoss(model, data, null, [name], loss, labels: form != "logits");
            var values = model.ReadFloats(model.FindTensor(name)!).Select(v => v * (float)(1 + (0.3 * (random.NextDouble() - 0.5)))).ToArray();

            var whole = measured.Increase(measured.Outputs([(name, values)]));
            var streamed = measured.Increase(name, values);

            Assert.True(ModelEvaluator.BatchFor([data.Get(data.ArrayNames.First(a => a != DataFile.LabelArray))]) < measured.Samples);
            Assert.True(whole > 1e-5, $"{form}: {whole}");
            Assert.Equal(whole, streamed);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static DataFile RandomLines(string folder)
    {
        Directory.CreateDirectory(folder);
        var random = new Random(1);
        var values = Enumerable.Range(0, 2 * 3 * 48 * 320).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
        var path = Path.Combine(folder, "lines.npz");
        NpzWriter.Write(path, ("x", NpzWriter.Floats([2, 3, 48, 320], values)));
        return DataFile.Load(path);
    }

    [Theory]
    [InlineData(new long[] { 512, 1, 28, 28 }, 256)]
    [InlineData(new long[] { 128, 3, 224, 224 }, 6)]
    [InlineData(new long[] { 32, 3, 640, 640 }, 1)]
    public void Batches_shrink_as_samples_grow_so_a_run_holds_a_bounded_input(long[] shape, int expected)
    {
        var array = new NpyArray("x", NpyDType.Float32, shape, new float[shape.Aggregate(1L, (a, b) => a * b)], null);

        Assert.Equal(expected, ModelEvaluator.BatchFor([array]));
    }

    [Fact]
    public void No_more_runs_are_in_flight_at_once_than_there_are_cores()
    {
        // Four threads per core measure at once, as a parallel loop whose threads block in ONNX Runtime grows to;
        // each run in flight holds a batch's activations, so the cap is what bounds the memory.
        using var measured = new MeasuredLoss(_model, _data, null, s_weights);
        var values = _model.ReadFloats(_model.FindTensor("fc1.weight")!);
        var threads = Enumerable.Range(0, 4 * Environment.ProcessorCount).Select(_ => new Thread(() => measured.Increase("fc1.weight", values))).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        Assert.Equal(threads.Count, measured.Throughput.Candidates);
        Assert.InRange(measured.PeakRuns, 1, Environment.ProcessorCount);
    }

    [Fact]
    public void Weights_in_Constant_nodes_share_the_session_and_measure_what_the_rebuilt_model_measures()
    {
        // paddle2onnx writes every weight as a Constant node: they become overridable initializers, one session for
        // all candidates, where a session per candidate (the reference here) took seconds each on PP-OCR.
        var model = OnnxModel.Load(Fixtures.Model("lenet5-constants.onnx"));
        using var measured = new MeasuredLoss(model, _data, null, s_weights);
        using var rebuilt = new MeasuredLoss(model, _data, null, []);
        var fc3 = model.ReadFloats(model.FindTensor("fc3.weight")!);

        Assert.Equal(0, measured.Increase("fc3.weight", fc3), 6);
        Assert.True(measured.Increase("fc3.weight", new float[fc3.Length]) > 1);
        var random = new Random(5);
        foreach (var name in s_weights)
        {
            var values = model.ReadFloats(model.FindTensor(name)!).Select(v => v + (float)(0.05 * (random.NextDouble() - 0.5))).ToArray();
            var expected = rebuilt.Increase(name, values);
            var actual = measured.Increase(name, values);
            Assert.True(Math.Abs(actual - expected) <= (1e-4 * Math.Abs(expected)) + 1e-7, $"{name}: {actual} against {expected}");
        }

        // Both together, as the joint check measures them.
        var both = s_weights.Take(2).Select(n => (n, model.ReadFloats(model.FindTensor(n)!).Select(v => v * 0.9f).ToArray())).ToArray();
        Assert.True(Math.Abs(measured.Increase(both) - rebuilt.Increase(both)) <= 1e-4 * Math.Abs(rebuilt.Increase(both)) + 1e-7);
    }

    /// <summary>
    /// Outputs that are not samples x class logits, against closed forms computed here: a recognizer-like
    /// samples x steps x classes Softmax (KL per time step of the probabilities as they are, and at temperatures
    /// above 1 of softmax(logits / T), which the closed form takes from the logits and the measurement recovers from
    /// the probabilities), a Sigmoid map (binary KL per element), and plain values (mean squared error). The model
    /// is y = f(x W) with x of samples x 3 x 4 and W of 4 x 5.
    /// </summary>
    [Theory]
    [InlineData("Softmax", 1.0)]
    [InlineData("Softmax", 2.0)]
    [InlineData("Softmax", 4.0)]
    [InlineData("Softmax", 0.5)]
    [InlineData("Sigmoid", 1.0)]
    [InlineData("", 1.0)]
    public void Each_output_form_is_compared_by_its_own_divergence(string activation, double temperature)
    {
        const int Samples = 6, Steps = 3, Inputs = 4, Classes = 5;
        var random = new Random(3);
        var x = Enumerable.Range(0, Samples * Steps * Inputs).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var w = Enumerable.Range(0, Inputs * Classes).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var moved = w.Select(v => v + (float)(0.3 * (random.NextDouble() - 0.5))).ToArray();
        var folder = Path.Combine(Path.GetTempPath(), "quanttasks-tests", $"forms-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            var model = TinyModel(Path.Combine(folder, "m.onnx"), w, activation);
            NpzWriter.Write(Path.Combine(folder, "x.npz"), ("x", NpzWriter.Floats([Samples, Steps, Inputs], x)));
            var data = DataFile.Load(Path.Combine(folder, "x.npz"));
            var form = activation switch
            {
                "Softmax" => new OutputLoss(OutputComparison.Probabilities, -1, temperature),
                "Sigmoid" => new OutputLoss(OutputComparison.BinaryProbabilities),
                _ => new OutputLoss(OutputComparison.Values),
            };
            using var measured = new MeasuredLoss(model, data, null, ["w"], form);

            double[] Forward(float[] weights, int sample, int step)
            {
                var y = new double[Classes];
                for (var c = 0; c < Classes; c++)
                {
                    for (var k = 0; k < Inputs; k++)
                    {
                        y[c] += (double)x[(((sample * Steps) + step) * Inputs) + k] * weights[(k * Classes) + c];
                    }
                }

                if (activation == "Softmax")
                {
                    var max = y.Max();
                    var e = y.Select(v => Math.Exp((v - max) / temperature)).ToArray();
                    return e.Select(v => v / e.Sum()).ToArray();
                }

                return activation == "Sigmoid" ? y.Select(v => 1 / (1 + Math.Exp(-v))).ToArray() : y;
            }

            double expected = 0;
            for (var sample = 0; sample < Samples; sample++)
            {
                for (var step = 0; step < Steps; step++)
                {
                    var p = Forward(w, sample, step);
                    var q = Forward(moved, sample, step);
                    expected += activation switch
                    {
                        "Softmax" => p.Zip(q, (a, b) => a * Math.Log(a / b)).Sum() / Steps,
                        "Sigmoid" => p.Zip(q, (a, b) => (a * Math.Log(a / b)) + ((1 - a) * Math.Log((1 - a) / (1 - b)))).Sum() / (Steps * Classes),
                        _ => p.Zip(q, (a, b) => (a - b) * (a - b)).Sum() / (Steps * Classes),
                    };
                }
            }

            expected /= Samples;
            var actual = measured.Increase("w", moved);
            Assert.True(expected > 1e-4, $"{expected}");
            Assert.True(Math.Abs(actual - expected) <= 1e-4 * expected, $"{activation} at {temperature}: measured {actual}, closed form {expected}");
            Assert.Equal(0, measured.Increase("w", w), 9);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static OnnxModel TinyModel(string path, float[] w, string activation)
    {
        var bytes = new byte[w.Length * 4];
        Buffer.BlockCopy(w, 0, bytes, 0, bytes.Length);
        static ValueInfoProto Value(string name, params long[] dims)
        {
            var type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto() } };
            type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
            type.TensorType.Shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
            return new ValueInfoProto { Name = name, Type = type };
        }

        var graph = new GraphProto { Name = "tiny" };
        graph.Input.Add(Value("x", 3, 4));
        graph.Output.Add(Value("y", 3, 5));
        graph.Initializer.Add(new TensorProto { Name = "w", DataType = 1, Dims = { 4, 5 }, RawData = ByteString.CopyFrom(bytes) });
        graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "matmul", Input = { "x", "w" }, Output = { activation.Length > 0 ? "logits" : "y" } });
        if (activation.Length > 0)
        {
            var node = new NodeProto { OpType = activation, Name = "activation", Input = { "logits" }, Output = { "y" } };
            if (activation == "Softmax")
            {
                node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
            }

            graph.Node.Add(node);
        }

        var proto = new ModelProto { IrVersion = 8, Graph = graph };
        proto.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        File.WriteAllBytes(path, proto.ToByteArray());
        return OnnxModel.Load(path);
    }
}
