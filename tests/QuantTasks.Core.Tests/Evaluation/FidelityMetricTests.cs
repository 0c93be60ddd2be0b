using QuantTasks.Evaluation;

namespace QuantTasks.Core.Tests.Evaluation;

/// <summary>The label-free figures against counts done by hand and by brute force.</summary>
public sealed class FidelityMetricTests
{
    [Fact]
    public void Agreement_per_time_step_counts_each_position_of_a_sequence()
    {
        // Two samples of 3 time steps x 4 classes; the second model differs at sample 0 step 2 and sample 1 step 0.
        float[] a =
        [
            9, 0, 0, 0, /**/ 0, 9, 0, 0, /**/ 0, 0, 9, 0,
            0, 0, 0, 9, /**/ 9, 0, 0, 0, /**/ 0, 9, 0, 0,
        ];
        var b = (float[])a.Clone();
        b[(0 * 12) + (2 * 4) + 3] = 10; // sample 0, step 2: class 3 now wins
        b[(1 * 12) + (0 * 4) + 0] = 10; // sample 1, step 0: class 0 now wins over 3
        var reference = new ModelOutputs(a, 2, 12, [3, 4]);
        var other = new ModelOutputs(b, 2, 12, [3, 4]);

        Assert.Equal(100.0 * 4 / 6, ModelEvaluator.Agreement(reference, other, classAxis: 1), 12);
        Assert.Equal(0.0, ModelEvaluator.Agreement(reference, other), 12); // the old flattened argmax: one position per sample, both moved
    }

    [Fact]
    public void Agreement_along_a_leading_class_axis_matches_brute_force_per_pixel()
    {
        // Segmentation-like: 2 samples x 3 classes x 2 x 5 pixels, random scores.
        var random = new Random(5);
        long[] shape = [3, 2, 5];
        var size = 30;
        var a = Enumerable.Range(0, 2 * size).Select(_ => (float)random.NextDouble()).ToArray();
        var b = a.Select(v => v + (float)(0.3 * (random.NextDouble() - 0.5))).ToArray();

        var expected = 0;
        for (var s = 0; s < 2; s++)
        {
            for (var pixel = 0; pixel < 10; pixel++)
            {
                int Best(float[] x) => Enumerable.Range(0, 3).OrderByDescending(c => x[(s * size) + (c * 10) + pixel]).ThenBy(c => c).First();
                expected += Best(a) == Best(b) ? 1 : 0;
            }
        }

        var measured = ModelEvaluator.Agreement(new ModelOutputs(a, 2, size, shape), new ModelOutputs(b, 2, size, shape), classAxis: 0);
        Assert.Equal(100.0 * expected / 20, measured, 12);
    }

    [Fact]
    public void Binary_agreement_compares_decisions_at_one_half()
    {
        var reference = new ModelOutputs([0.1f, 0.6f, 0.49f, 0.9f], 1, 4, [1, 2, 2]);
        var other = new ModelOutputs([0.2f, 0.4f, 0.51f, 0.95f], 1, 4, [1, 2, 2]);

        Assert.Equal(50.0, ModelEvaluator.BinaryAgreement(reference, other), 12);
    }
}
