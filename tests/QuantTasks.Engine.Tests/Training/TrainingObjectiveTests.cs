using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Engine.Training;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Tests;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Training;

/// <summary>Fine-tuning's loss fits what produces the output, and each form equals its closed form.</summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class TrainingObjectiveTests
{
    public TrainingObjectiveTests() => LibTorch.EnsureLoaded();

    [Fact]
    public void A_sigmoid_map_trains_through_its_logits_under_binary_KL_which_matches_the_closed_form()
    {
        var model = OnnxModel.Load(Fixtures.Model("segment.onnx"));
        var sigmoid = model.Graph.Node.Last(n => n.OpType == "Sigmoid");
        using var objective = TrainingObjective.For(model, model.Graph.Output[0].Name, new FinetuneOptions { Temperature = 2 }, hasLabels: false, "train.npz");

        Assert.Equal(ScoreKind.Binary, objective.Kind);
        Assert.Equal(sigmoid.Input[0], objective.Scores);
        Assert.Equal(FinetuneLoss.Distillation, objective.Loss);

        float[] student = [0.5f, -2f, 3f, 0.25f];
        float[] teacher = [1f, -1f, 2f, -0.5f];
        using var s = torch.tensor(student, [1, 1, 2, 2]);
        using var t = torch.tensor(teacher, [1, 1, 2, 2]);
        var expected = 0.0;
        for (var i = 0; i < 4; i++)
        {
            // KL(Bernoulli(p) || Bernoulli(q)) at temperature 2, times 4, averaged over the map.
            double p = 1 / (1 + Math.Exp(-teacher[i] / 2)), q = 1 / (1 + Math.Exp(-student[i] / 2));
            expected += 4 * ((p * Math.Log(p / q)) + ((1 - p) * Math.Log((1 - p) / (1 - q)))) / 4;
        }

        Assert.Equal(expected, objective.Compute(s, t, null).item<float>(), 1e-6);
        Assert.Equal((3, 4), objective.Agreement(s, t, null)); // 0.25 against -0.5: the two sides of one half
    }

    [Fact]
    public void Class_logits_get_temperature_KL_and_cross_entropy_mixed_by_alpha_as_in_closed_form()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var options = new FinetuneOptions { Temperature = 3, Alpha = 0.25 };
        using var objective = TrainingObjective.For(model, model.Graph.Output[0].Name, options, hasLabels: true, "train.npz");

        Assert.Equal(ScoreKind.Categorical, objective.Kind);
        Assert.Equal(FinetuneLoss.Mixed, objective.Loss);
        Assert.Equal("top1", objective.Metric(labels: true));

        double[][] student = [[1, 2, 0.5], [0, -1, 3]];
        double[][] teacher = [[2, 1, 0], [0.5, 0, 2]];
        long[] labels = [1, 2];
        using var s = torch.tensor(student.SelectMany(r => r.Select(v => (float)v)).ToArray(), [2, 3]);
        using var t = torch.tensor(teacher.SelectMany(r => r.Select(v => (float)v)).ToArray(), [2, 3]);
        using var y = torch.tensor(labels, torch.ScalarType.Int64);
        static double[] Softmax(double[] z, double temperature)
        {
            var e = z.Select(v => Math.Exp(v / temperature)).ToArray();
            return e.Select(v => v / e.Sum()).ToArray();
        }

        double kl = 0, ce = 0;
        for (var r = 0; r < 2; r++)
        {
            var p = Softmax(teacher[r], 3);
            var q = Softmax(student[r], 3);
            kl += 9 * p.Zip(q).Sum(x => x.First * Math.Log(x.First / x.Second)) / 2;
            ce += -Math.Log(Softmax(student[r], 1)[labels[r]]) / 2;
        }

        Assert.Equal((0.25 * ce) + (0.75 * kl), objective.Compute(s, t, y).item<float>(), 1e-5);
        Assert.Equal((2, 2), objective.Agreement(s, t, y));
    }

    [Fact]
    public void Cross_entropy_without_labels_is_refused_naming_the_training_file()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));

        var error = Assert.Throws<QuantException>(() =>
            TrainingObjective.For(model, model.Graph.Output[0].Name, new FinetuneOptions { Loss = FinetuneLoss.CrossEntropy }, hasLabels: false, "train.npz"));

        Assert.Equal(ErrorCode.DataMissingArray, error.Code);
        Assert.Equal("train.npz", error.Location!.File);
        Assert.Contains("loss: distillation", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cross_entropy_on_a_map_is_refused_since_labels_are_per_sample()
    {
        var model = OnnxModel.Load(Fixtures.Model("segment.onnx"));

        var error = Assert.Throws<QuantException>(() =>
            TrainingObjective.For(model, model.Graph.Output[0].Name, new FinetuneOptions { Loss = FinetuneLoss.Mixed }, hasLabels: true, "train.npz"));

        Assert.Equal(ErrorCode.DataWrongType, error.Code);
    }
}
