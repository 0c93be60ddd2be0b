using QuantTasks.Randomness;
using TorchSharp;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Hessian;

/// <summary>What the estimators found for one weight tensor.</summary>
/// <param name="Trace">Trace of its Hessian block (Hutchinson), when estimated.</param>
/// <param name="TopEigenvalue">Largest eigenvalue of its block (power iteration), when estimated.</param>
/// <param name="Diagonal">Its block's diagonal (Hutchinson), when estimated.</param>
/// <param name="TraceProbes">Probes the trace took.</param>
/// <param name="EigenIterations">Iterations the eigenvalue took.</param>
internal sealed record BlockEstimate(double? Trace, double? TopEigenvalue, float[]? Diagonal, int TraceProbes, int EigenIterations);

/// <summary>Progress of an estimate: which one, and how many probes or iterations so far.</summary>
/// <param name="Estimator">trace or eigenvalue.</param>
/// <param name="Step">Probes or iterations done.</param>
/// <param name="MaxSteps">The most there will be.</param>
internal sealed record EstimatorProgress(string Estimator, int Step, int MaxSteps);

/// <summary>
/// Hutchinson's estimators of the trace and diagonal of each weight tensor's Hessian block, and power iteration
/// for each block's top eigenvalue. Probe vectors come from <see cref="SplitMix64"/> seeded with (seed, probe
/// index), so a seed fixes the result.
/// </summary>
internal static class HessianEstimators
{
    /// <summary>Probes evaluated per pass over the data: each pass builds every batch's gradient graph once.</summary>
    private const int ProbesPerPass = 4;

    /// <summary>
    /// Trace and diagonal of every block at once: one Hessian-vector product per probe with a Rademacher vector
    /// over all tensors; the cross terms between tensors vanish in expectation, so v_t . (Hv)_t estimates tr(H_tt)
    /// and v_t * (Hv)_t its diagonal. Stops when, for every tensor, the running mean changes by less than the
    /// relative tolerance and its standard error is below the same fraction of it (the change alone can be small
    /// by chance after a few probes), or after <paramref name="maxProbes"/>.
    /// </summary>
    public static (double[] Traces, float[][] Diagonals, int Probes) TraceAndDiagonal(
        HessianOracle oracle, int maxProbes, double tolerance, long seed, IProgress<EstimatorProgress>? progress)
    {
        var parameters = oracle.Parameters;
        var count = parameters.Count;
        var sizes = parameters.Select(p => (int)p.numel()).ToArray();
        var traces = new double[count];
        var squares = new double[count];
        var device = parameters[0].device;

        // The diagonal accumulates on the device in float64, so no element ever crosses to managed memory per probe.
        var diagonals = parameters.Select(p => zeros(p.shape, ScalarType.Float64, device)).ToArray();
        var probes = 0;
        var converged = false;
        try
        {
            while (!converged && probes < maxProbes)
            {
                var pass = Math.Min(ProbesPerPass, maxProbes - probes);
                var sums = new double[pass, count];
                var vectors = Enumerable.Range(0, pass).Select(k => Rademacher(seed, probes + k, sizes)).ToArray();
                oracle.ForEachBatch(batch =>
                {
                    // An explicit scalar kept alive by using: an implicit one could be finalized mid-call.
                    using var weight = batch.Weight.ToScalar();
                    for (var k = 0; k < pass; k++)
                    {
                        var v = vectors[k].Select((values, t) => tensor(values, parameters[t].shape).to(device)).ToList();
                        var hv = batch.Product(v);
                        for (var t = 0; t < count; t++)
                        {
                            var product = (v[t] * hv[t]).to(ScalarType.Float64);
                            sums[k, t] += batch.Weight * product.sum().item<double>();
                            diagonals[t].add_(product, weight);
                        }
                    }
                });

                // Probe by probe, the running mean and its standard error. Probes already computed in this pass
                // all count, so a pass is never wasted.
                for (var k = 0; k < pass; k++)
                {
                    probes++;
                    var unsettled = false;
                    for (var t = 0; t < count; t++)
                    {
                        var previous = traces[t];
                        traces[t] += (sums[k, t] - traces[t]) / probes;
                        squares[t] += sums[k, t] * sums[k, t];
                        var variance = Math.Max(0, (squares[t] / probes) - (traces[t] * traces[t])) * probes / Math.Max(1, probes - 1);
                        var standardError = Math.Sqrt(variance / probes);
                        var bound = tolerance * Math.Abs(traces[t]);
                        unsettled |= probes < 2 || Math.Abs(traces[t] - previous) > bound || standardError > bound;
                    }

                    converged |= !unsettled;
                }

                progress?.Report(new EstimatorProgress("trace", probes, maxProbes));
            }

            var result = diagonals.Select(d => (d / probes).to(ScalarType.Float32).cpu().flatten().data<float>().ToArray()).ToArray();
            return (traces, result, probes);
        }
        finally
        {
            foreach (var d in diagonals)
            {
                d.Dispose();
            }
        }
    }
    /// <summary>
    /// The top eigenvalue of each block H_tt by power iteration (largest in magnitude), all blocks advancing
    /// together: every pass over the data applies each unconverged block once. A block stops when its Rayleigh
    /// quotient changes by less than the relative tolerance, or after <paramref name="maxIterations"/>.
    /// </summary>
    public static (double[] Eigenvalues, int[] Iterations) TopEigenvalues(
        HessianOracle oracle, int maxIterations, double tolerance, long seed, IProgress<EstimatorProgress>? progress)
    {
        var parameters = oracle.Parameters;
        var count = parameters.Count;
        var device = parameters[0].device;
        var vectors = new Tensor[count];
        var eigenvalues = new double[count];
        var iterations = new int[count];
        var done = new bool[count];
        try
        {
            for (var t = 0; t < count; t++)
            {
                var start = new float[parameters[t].numel()];
                new SplitMix64(seed, -1 - t).Normal(start);
                using var initial = tensor(start, parameters[t].shape, ScalarType.Float64);
                vectors[t] = (initial / initial.norm()).to(device);
            }

            for (var iteration = 1; iteration <= maxIterations && done.Any(d => !d); iteration++)
            {
                var products = parameters.Select(p => zeros(p.shape, ScalarType.Float64, device)).ToArray();
                try
                {
                    oracle.ForEachBatch(batch =>
                    {
                        using var weight = batch.Weight.ToScalar();
                        for (var t = 0; t < count; t++)
                        {
                            if (!done[t])
                            {
                                products[t].add_(batch.BlockProduct(t, vectors[t].to(ScalarType.Float32)).to(ScalarType.Float64), weight);
                            }
                        }
                    });

                    for (var t = 0; t < count; t++)
                    {
                        if (done[t])
                        {
                            continue;
                        }

                        // Rayleigh quotient of the unit vector, then the next vector.
                        var quotient = (vectors[t] * products[t]).sum().item<double>();
                        var norm = products[t].norm().item<double>();
                        var previous = eigenvalues[t];
                        eigenvalues[t] = quotient;
                        iterations[t] = iteration;
                        if (norm == 0 || (iteration > 1 && Math.Abs(quotient - previous) <= tolerance * Math.Abs(quotient)))
                        {
                            done[t] = true;
                            continue;
                        }

                        vectors[t].Dispose();
                        vectors[t] = products[t] / norm;
                    }
                }
                finally
                {
                    foreach (var product in products)
                    {
                        product.Dispose();
                    }
                }

                progress?.Report(new EstimatorProgress("eigenvalue", iteration, maxIterations));
            }

            return (eigenvalues, iterations);
        }
        finally
        {
            foreach (var vector in vectors)
            {
                vector?.Dispose();
            }
        }
    }

    private static float[][] Rademacher(long seed, int probe, int[] sizes)
    {
        var random = new SplitMix64(seed, probe);
        return sizes.Select(n =>
        {
            var values = new float[n];
            random.Rademacher(values);
            return values;
        }).ToArray();
    }
}
