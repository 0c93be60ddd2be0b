using QuantTasks.Policy;
using QuantTasks.Quantization;

namespace QuantTasks.Core.Tests.Quantization;

/// <summary>Invariants of every quantizer, and what Hessian weighting, ECSQ's lambda and pruning must achieve.</summary>
public sealed class CodebookQuantizerTests
{
    private const int Channels = 8;
    private const int PerChannel = 300;
    private static readonly long[] Dims = [Channels, PerChannel];

    public static TheoryData<string, string> Methods => new()
    {
        { QuantizationMethods.Uniform, nameof(EcsqAlgorithm.Iterative) },
        { QuantizationMethods.Kmeans, nameof(EcsqAlgorithm.Iterative) },
        { QuantizationMethods.HessianKmeans, nameof(EcsqAlgorithm.Iterative) },
        { QuantizationMethods.Ecsq, nameof(EcsqAlgorithm.Iterative) },
        { QuantizationMethods.Ecsq, nameof(EcsqAlgorithm.Uniform) },
    };

    [Theory]
    [MemberData(nameof(Methods))]
    public void At_most_two_to_the_bits_levels_and_error_falls_as_bits_rise(string method, string ecsqName)
    {
        var ecsq = Enum.Parse<EcsqAlgorithm>(ecsqName);
        var values = Gaussian(Channels * PerChannel, seed: 1, scalePerChannel: true);
        var hessian = Positive(values.Length, seed: 2);
        foreach (var axis in new[] { 0, -1 })
        {
            var tensor = PreparedTensor.Create("w", values, Dims, axis, method == QuantizationMethods.Uniform || method == QuantizationMethods.Kmeans ? null : hessian);
            var previous = double.PositiveInfinity;
            for (var bits = 1; bits <= 8; bits++)
            {
                var q = TensorQuantizer.Quantize(tensor, method, bits, new QuantizerSettings(Ecsq: ecsq, EcsqLambda: 0));
                Assert.All(q.Symbols, s => Assert.True(s < 1 << bits));
                var reconstructed = q.Dequantize();
                var channels = axis < 0 ? 1 : Channels;
                for (var c = 0; c < channels; c++)
                {
                    var levels = reconstructed.Where((_, i) => axis < 0 || i / PerChannel == c).Distinct().Count();
                    Assert.True(levels <= 1 << bits, $"{method} {bits} bits: {levels} levels");
                }

                var error = WeightedError(reconstructed, values, tensor.IsHessianWeighted ? hessian : null);
                Assert.True(error <= previous * (1 + 1e-9), $"{method} axis {axis}: error {error} at {bits} bits after {previous}");
                previous = error;
            }
        }
    }

    [Theory]
    [InlineData(QuantizationMethods.Uniform)]
    [InlineData(QuantizationMethods.Kmeans)]
    [InlineData(QuantizationMethods.Ecsq)]
    public void Per_channel_levels_are_no_worse_than_per_tensor(string method)
    {
        var values = Gaussian(Channels * PerChannel, seed: 3, scalePerChannel: true);
        foreach (var bits in new[] { 2, 3, 4, 6 })
        {
            var perChannel = TensorQuantizer.Quantize(PreparedTensor.Create("w", values, Dims, 0), method, bits, new QuantizerSettings());
            var perTensor = TensorQuantizer.Quantize(PreparedTensor.Create("w", values, Dims, -1), method, bits, new QuantizerSettings());
            Assert.True(TensorQuantizer.SquaredError(perChannel, values) <= TensorQuantizer.SquaredError(perTensor, values), $"{method} at {bits} bits");
        }
    }

    [Fact]
    public void Hessian_weighted_kmeans_lowers_the_Hessian_weighted_distortion()
    {
        // A known diagonal Hessian: the large weights (beyond 1.5 standard deviations) matter a hundred times
        // more than the rest, so the weighted centres must move out to them.
        var values = Gaussian(4000, seed: 4, scalePerChannel: false);
        var hessian = values.Select(v => Math.Abs(v) > 0.15f ? 100f : 1f).ToArray();
        foreach (var bits in new[] { 2, 3, 4 })
        {
            var plain = CodebookQuantizer.KMeans(PreparedTensor.Create("w", values, [4000], -1), bits, seed: 0);
            var weighted = CodebookQuantizer.KMeans(PreparedTensor.Create("w", values, [4000], -1, hessian), bits, seed: 0);
            Assert.Equal("hessian-kmeans", weighted.Method);
            var plainError = WeightedError(plain.Dequantize(), values, hessian);
            var weightedError = WeightedError(weighted.Dequantize(), values, hessian);
            Assert.True(weightedError < plainError * 0.8, $"{bits} bits: weighted {weightedError}, plain {plainError}");
        }
    }

    [Fact]
    public void Ecsq_entropy_falls_as_lambda_grows_while_distortion_rises()
    {
        var values = Gaussian(20000, seed: 6, scalePerChannel: false);
        var tensor = PreparedTensor.Create("w", values, [20000], -1);
        var lambdas = new[] { 0.0, 0.01, 0.03, 0.1, 0.3 };
        var results = lambdas.Select(l =>
        {
            var q = CodebookQuantizer.EcsqIterative(tensor, 5, l);
            return (Entropy: Entropy(q.Symbols), Error: TensorQuantizer.SquaredError(q, values));
        }).ToArray();
        for (var i = 1; i < results.Length; i++)
        {
            Assert.True(results[i].Entropy < results[i - 1].Entropy, $"lambda {lambdas[i]}: entropy {results[i].Entropy} after {results[i - 1].Entropy}");
            Assert.True(results[i].Error > results[i - 1].Error, $"lambda {lambdas[i]}: error {results[i].Error} after {results[i - 1].Error}");
        }
    }

    [Fact]
    public void Ecsq_at_lambda_zero_is_as_good_as_kmeans()
    {
        var values = Gaussian(5000, seed: 7, scalePerChannel: false);
        var tensor = PreparedTensor.Create("w", values, [5000], -1);
        var kmeans = TensorQuantizer.SquaredError(CodebookQuantizer.KMeans(tensor, 3, 0), values);
        var ecsq = TensorQuantizer.SquaredError(CodebookQuantizer.EcsqIterative(tensor, 3, 0), values);
        Assert.InRange(ecsq / kmeans, 0.9, 1.1);
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void Pruned_weights_stay_exactly_zero(string method, string ecsqName)
    {
        var ecsq = Enum.Parse<EcsqAlgorithm>(ecsqName);
        var values = Gaussian(Channels * PerChannel, seed: 8, scalePerChannel: true);
        var mask = MagnitudePruning.PerTensor(values, 0.6);
        Assert.Equal((int)(0.6 * values.Length), mask.Count(m => m));
        var tensor = PreparedTensor.Create("w", values, Dims, 0, Positive(values.Length, 9), mask);
        Assert.Equal(0.6, tensor.Sparsity, 6);
        foreach (var bits in new[] { 1, 2, 4, 8 })
        {
            var reconstructed = TensorQuantizer.Quantize(tensor, method, bits, new QuantizerSettings(Ecsq: ecsq)).Dequantize();
            for (var i = 0; i < values.Length; i++)
            {
                if (mask[i])
                {
                    Assert.Equal(0f, reconstructed[i]);
                }
            }
        }
    }

    [Fact]
    public void Pruning_takes_the_smallest_magnitudes_per_tensor_or_globally()
    {
        float[] a = [0.1f, -5, 0.2f, 3];
        float[] b = [-0.05f, 0.3f, 0.3f, 10, 0.01f, -0.3f];
        Assert.Equal([true, false, true, false], MagnitudePruning.PerTensor(a, 0.5));
        var global = MagnitudePruning.Global([a, b], 0.5);
        Assert.Equal([true, false, true, false], global[0]);

        // Five of ten: 0.01, 0.05, 0.1, 0.2 and the first 0.3 in element order.
        Assert.Equal([true, true, false, false, true, false], global[1]);
    }

    [Fact]
    public void The_same_seed_gives_the_same_codebook()
    {
        var values = Gaussian(3000, seed: 10, scalePerChannel: false);
        var tensor = PreparedTensor.Create("w", values, [3000], -1);
        var first = CodebookQuantizer.KMeans(tensor, 4, 3);
        var second = CodebookQuantizer.KMeans(PreparedTensor.Create("w", (float[])values.Clone(), [3000], -1), 4, 3);
        Assert.Equal(first.Parameters, second.Parameters);
        Assert.Equal(first.Symbols, second.Symbols);
    }

    [Fact]
    public void Kmeans_finds_well_separated_clusters_exactly()
    {
        // Four tight clusters: k-means with four centres must land on their means.
        var random = new Random(11);
        float[] means = [-3f, -1f, 0.5f, 4f];
        var values = Enumerable.Range(0, 400).Select(i => means[i % 4] + (float)((random.NextDouble() - 0.5) * 0.01)).ToArray();
        var q = CodebookQuantizer.KMeans(PreparedTensor.Create("w", values, [400], -1), 2, 0);
        for (var c = 0; c < 4; c++)
        {
            var expected = values.Where((_, i) => i % 4 == c).Average();
            Assert.Equal(expected, q.Parameters[c], 4);
        }
    }

    private static float[] Gaussian(int count, int seed, bool scalePerChannel)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(i =>
        {
            var u1 = 1 - random.NextDouble();
            var u2 = random.NextDouble();
            var g = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            var scale = scalePerChannel ? 0.05 * (1 + (i / PerChannel % Channels)) : 0.1;
            return (float)(g * scale);
        }).ToArray();
    }

    private static float[] Positive(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)Math.Exp(random.NextDouble() * 4 - 2)).ToArray();
    }

    private static double WeightedError(float[] reconstructed, float[] values, float[]? weights)
    {
        double sum = 0;
        for (var i = 0; i < values.Length; i++)
        {
            double d = reconstructed[i] - values[i];
            sum += (weights?[i] ?? 1) * d * d;
        }

        return sum;
    }

    private static double Entropy(byte[] symbols)
    {
        var counts = symbols.GroupBy(s => s).Select(g => (double)g.Count() / symbols.Length);
        return -counts.Sum(p => p * Math.Log2(p));
    }
}
