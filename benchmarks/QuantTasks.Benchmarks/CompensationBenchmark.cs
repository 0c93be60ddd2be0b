using System.Diagnostics;
using QuantTasks.Compensation;
using QuantTasks.Policy;
using QuantTasks.Search;
using QuantTasks.Weights;

namespace QuantTasks.Benchmarks;

/// <summary>
/// Compensated rounding (GPTQ) against plain rounding for ResNet-50's layer shapes, and the whole compensated
/// search of the 25.5 M-parameter ResNet-50-shaped network of <see cref="SearchBenchmark"/>, with its time and
/// peak memory. The layer Hessians are synthetic but dense and correlated like activations' (a positive diagonal
/// plus a rank-8 term); the work does not depend on their values.
/// </summary>
internal static class CompensationBenchmark
{
    public static void Print(bool layers, bool wholeNetwork)
    {
        var (weights, values) = SearchBenchmark.Network(1);
        var options = new QuantizationOptions
        {
            Method = QuantizationMethods.Uniform,
            Granularity = Granularity.PerChannel,
            Budget = new BudgetOptions { AverageBits = 4 },
            KeepFloat = [],
        };
        if (layers)
        {
            PrintLayers(weights, values, options);
        }

        if (wholeNetwork)
        {
            PrintNetwork(weights, values, options);
        }
    }

    private static void PrintLayers(WeightTensor[] weights, float[][] values, QuantizationOptions options)
    {

        Console.WriteLine("## Compensated rounding per layer shape (ResNet-50), 4-bit uniform per channel, both cores");
        Console.WriteLine("| shape (rows x columns) | plain rounding ms | factorisation ms | compensation ms | (factorisation + compensation) / plain |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var group in weights.Select((w, i) => (w, i)).GroupBy(x => (Rows: x.w.Shape[0], Columns: x.w.Params / x.w.Shape[0])))
        {
            var (weight, t) = group.First();
            var single = new SearchInputs(options, new PruningOptions(), true, null);
            var plainWatch = Stopwatch.StartNew();
            MixedPrecisionSearch.Run([weight], [values[t]], single, parallelism: 1);
            var plainMs = plainWatch.Elapsed.TotalMilliseconds;

            var hessian = Synthetic(weight);
            var factorWatch = Stopwatch.StartNew();
            hessian.Factor(0, new CompensationOptions());
            var factorMs = factorWatch.Elapsed.TotalMilliseconds;
            var compensated = new SearchInputs(options, new PruningOptions(), true, null,
                LayerHessians: new Dictionary<string, LayerHessian> { [weight.Name] = hessian }, Compensation: new CompensationOptions());
            var compensateWatch = Stopwatch.StartNew();
            MixedPrecisionSearch.Run([weight], [values[t]], compensated, parallelism: 1);
            var compensateMs = compensateWatch.Elapsed.TotalMilliseconds;
            Console.WriteLine($"| {group.Key.Rows} x {group.Key.Columns} ({group.Count()} layers) | {plainMs:F0} | {factorMs:F0} | {compensateMs:F0} | {(factorMs + compensateMs) / plainMs:F1} |");
        }

    }

    // Peak memory is that of this part alone when it runs in its own process (--network-only).
    private static void PrintNetwork(WeightTensor[] weights, float[][] values, QuantizationOptions options)
    {
        Console.WriteLine();
        Console.WriteLine("## Whole compensated search, ResNet-50-shaped network, candidates 2..8 bits, both cores");
        var fresh = weights.ToDictionary(w => w.Name, Synthetic, StringComparer.Ordinal);
        var inputs = new SearchInputs(options, new PruningOptions(), true, null, LayerHessians: fresh, Compensation: new CompensationOptions());
        var plainInputs = new SearchInputs(options, new PruningOptions(), true, null);
        var watch = Stopwatch.StartNew();
        MixedPrecisionSearch.Run(weights, values, plainInputs);
        var plainSeconds = watch.Elapsed.TotalSeconds;
        watch.Restart();
        var result = MixedPrecisionSearch.Run(weights, values, inputs);
        var seconds = watch.Elapsed.TotalSeconds;
        using var process = Process.GetCurrentProcess();
        Console.WriteLine("| parameters | plain search s | compensated search s | ratio | peak working set GB | payload / budget |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        Console.WriteLine($"| {weights.Sum(w => w.Params):N0} | {plainSeconds:F1} | {seconds:F1} | {seconds / plainSeconds:F1} | {process.PeakWorkingSet64 / 1e9:F2} | {result.PayloadBytes:N0} / {result.Budget:N0} |");
    }

    // A dense positive definite H = D + V V^T with V of rank 8, like the Gram matrix of correlated activations.
    private static LayerHessian Synthetic(WeightTensor weight)
    {
        var rows = (int)weight.Shape[0];
        var columns = (int)(weight.Params / rows);
        var random = new Random(columns);
        var v = new double[8 * columns];
        for (var i = 0; i < v.Length; i++)
        {
            v[i] = random.NextDouble() - 0.5;
        }

        var h = new double[(long)columns * columns];
        Parallel.For(0, columns, a =>
        {
            for (var b = 0; b < columns; b++)
            {
                double sum = 0;
                for (var k = 0; k < 8; k++)
                {
                    sum += v[(k * columns) + a] * v[(k * columns) + b];
                }

                h[((long)a * columns) + b] = sum;
            }

            h[((long)a * columns) + a] += 0.5 + (0.5 * ((a * 7919) % 13) / 13.0);
        });

        return new LayerHessian(weight.Name, rows, columns, 1, false, [SymmetricMatrix.FromDense(h, columns)], 1);
    }
}
