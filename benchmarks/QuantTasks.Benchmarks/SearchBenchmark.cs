using System.Diagnostics;
using System.Globalization;
using QuantTasks.Policy;
using QuantTasks.Search;
using QuantTasks.Weights;

namespace QuantTasks.Benchmarks;

/// <summary>
/// Search plus quantization on one core for tensors shaped like ResNet-50's (25.5 M parameters: 53 convolutions
/// and the classifier), Gaussian weights scaled by 1 / sqrt(fan-in), at every candidate width 2..8. The same
/// network with its output channels cut to 1/8, 1/4 and 1/2 shows how the time grows with parameters: a time per
/// million parameters that stays flat is linear growth.
/// </summary>
internal static class SearchBenchmark
{
    public static void Print()
    {
        Console.WriteLine("## Search + quantization, ResNet-50-shaped tensors, one core");
        Console.WriteLine("| method | scale | parameters | seconds | s per M params | / at 1/8 scale |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        foreach (var method in new[] { QuantizationMethods.Uniform, QuantizationMethods.Kmeans, QuantizationMethods.Ecsq })
        {
            double? baseline = null;
            foreach (var scale in new[] { 8, 4, 2, 1 })
            {
                var (weights, values) = Network(scale);
                var parameters = weights.Sum(w => w.Params);
                var options = new QuantizationOptions
                {
                    Method = method,
                    Granularity = Granularity.PerChannel,
                    Budget = new BudgetOptions { AverageBits = 4 },
                    KeepFloat = [],
                };
                var watch = Stopwatch.StartNew();
                var result = MixedPrecisionSearch.Run(weights, values, new SearchInputs(options, new PruningOptions(), true, null), parallelism: 1);
                var seconds = watch.Elapsed.TotalSeconds;
                var perMillion = seconds / (parameters / 1e6);
                baseline ??= perMillion;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {method} | 1/{scale} | {parameters:N0} | {seconds:0.00} | {perMillion:0.000} | {perMillion / baseline:0.00} |"));
                GC.KeepAlive(result);
            }
        }
    }

    /// <summary>ResNet-50's weight shapes with every output-channel count divided by <paramref name="divisor"/>.</summary>
    internal static (WeightTensor[] Weights, float[][] Values) Network(int divisor)
    {
        var shapes = new List<long[]>();
        long Cut(long channels) => Math.Max(1, channels / divisor);
        shapes.Add([Cut(64), 3, 7, 7]);
        long inputs = Cut(64);
        foreach (var (blocks, mid, output) in new[] { (3, 64L, 256L), (4, 128L, 512L), (6, 256L, 1024L), (3, 512L, 2048L) })
        {
            for (var b = 0; b < blocks; b++)
            {
                shapes.Add([Cut(mid), inputs, 1, 1]);
                shapes.Add([Cut(mid), Cut(mid), 3, 3]);
                shapes.Add([Cut(output), Cut(mid), 1, 1]);
                if (b == 0)
                {
                    shapes.Add([Cut(output), inputs, 1, 1]);
                }

                inputs = Cut(output);
            }
        }

        shapes.Add([Cut(1000), inputs]);
        var random = new Random(42);
        var weights = shapes.Select((s, i) =>
        {
            var count = s.Aggregate(1L, (a, b) => a * b);
            return new WeightTensor($"layer{i}.weight", s, count, count * 4, s.Length == 2 ? "Gemm" : "Conv", WeightStorage.Initializer, 1, 0);
        }).ToArray();
        var values = shapes.Select(s =>
        {
            var count = s.Aggregate(1L, (a, b) => a * b);
            var scale = 1 / Math.Sqrt(count / s[0]);
            var v = new float[count];
            for (var i = 0; i < v.Length; i += 2)
            {
                var radius = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * scale;
                var angle = 2 * Math.PI * random.NextDouble();
                v[i] = (float)(radius * Math.Cos(angle));
                if (i + 1 < v.Length)
                {
                    v[i + 1] = (float)(radius * Math.Sin(angle));
                }
            }

            return v;
        }).ToArray();
        return (weights, values);
    }
}
