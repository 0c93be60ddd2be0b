using QuantTasks.Data;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Evaluation;

public sealed class MeasuredLossTests
{
    private readonly OnnxModel _model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
    private readonly DataFile _data = DataFile.Load(Fixtures.Data("digits-calibration.npz"));

    [Fact]
    public void A_tensor_replaced_by_its_own_values_changes_nothing()
    {
        var measured = new MeasuredLoss(_model, _data, null);
        var fc2 = _model.ReadFloats(_model.FindTensor("fc2.weight")!);

        Assert.Equal(0, measured.Increase("fc2.weight", fc2), 9);
    }

    [Fact]
    public void Zeroing_the_last_layer_leaves_the_bias_as_logits_and_the_increase_is_their_cross_entropy_minus_the_float_one()
    {
        var measured = new MeasuredLoss(_model, _data, null);
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
}
