using QuantTasks.Data;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
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

    [Fact]
    public void Weights_in_Constant_nodes_are_measured_by_rebuilding_the_model()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5-constants.onnx"));
        using var measured = new MeasuredLoss(model, _data, null, s_weights);
        var fc3 = model.ReadFloats(model.FindTensor("fc3.weight")!);

        Assert.Equal(0, measured.Increase("fc3.weight", fc3), 9);
        Assert.True(measured.Increase("fc3.weight", new float[fc3.Length]) > 1);
    }
}
