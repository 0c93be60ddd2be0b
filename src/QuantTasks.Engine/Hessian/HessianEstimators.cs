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
    /// by chance after a few probes), or after <paramref name="maxProbes"/> products.
    /// </summary>
    /// <param name="oracle">The Hessian-vector products.</param>
    /// <param name="maxProbes">Most Hessian-vector products, the sketch's included.</param>
    /// <param name="tolerance">Relative precision at which the estimate stops.</param>
    /// <param name="seed">Seed of the probes.</param>
    /// <param name="progress">Hears of each pass.</param>
    /// <param name="sketch">
    /// Hutch++'s rank: 0 is Hutchinson's estimator alone; k &gt; 0 first takes 2k products to compute the part of H
    /// in the span of H S (S: k random vectors) exactly, and probes only the rest (see <see cref="Deflation"/>).
    /// </param>
    public static (double[] Traces, float[][] Diagonals, int Probes) TraceAndDiagonal(
        HessianOracle oracle, int maxProbes, double tolerance, long seed, IProgress<EstimatorProgress>? progress, int sketch = 0)
    {
        var parameters = oracle.Parameters;
        var count = parameters.Count;
        var sizes = parameters.Select(p => (int)p.numel()).ToArray();
        var device = parameters[0].device;
        using var deflation = sketch > 0 ? Deflation.Compute(oracle, Math.Min(sketch, maxProbes / 3), seed, progress, maxProbes) : null;
        var exact = deflation?.Traces ?? new double[count];
        var traces = new double[count];
        var squares = new double[count];

        // The diagonal accumulates on the device in float64, so no element ever crosses to managed memory per probe.
        var diagonals = parameters.Select(p => zeros(p.shape, ScalarType.Float64, device)).ToArray();
        var probes = 0;
        var products = deflation?.Products ?? 0;
        var converged = false;
        try
        {
            while (!converged && products < maxProbes)
            {
                var pass = Math.Min(ProbesPerPass, maxProbes - products);
                var sums = new double[pass, count];
                var vectors = Enumerable.Range(0, pass).Select(k => Rademacher(seed, probes + k, sizes)).ToArray();
                oracle.ForEachBatch(batch =>
                {
                    // An explicit scalar kept alive by using: an implicit one could be finalized mid-call.
                    using var weight = batch.Weight.ToScalar();
                    for (var k = 0; k < pass; k++)
                    {
                        var v = vectors[k].Select((values, t) => tensor(values, parameters[t].shape).to(device)).ToList();
                        var hv = deflation?.Remainder(batch.Product(v)) ?? batch.Product(v);
                        for (var t = 0; t < count; t++)
                        {
                            var product = (v[t] * hv[t]).to(ScalarType.Float64);
                            sums[k, t] += batch.Weight * product.sum().item<double>();
                            diagonals[t].add_(product, weight);
                        }
                    }
                });

                // Probe by probe, the running mean and its standard error. Probes already computed in this pass
                // all count, so a pass is never wasted. The sketch's part is exact: only the probed rest varies.
                for (var k = 0; k < pass; k++)
                {
                    probes++;
                    products++;
                    var unsettled = false;
                    for (var t = 0; t < count; t++)
                    {
                        var previous = traces[t];
                        traces[t] += (sums[k, t] - traces[t]) / probes;
                        squares[t] += sums[k, t] * sums[k, t];
                        var variance = Math.Max(0, (squares[t] / probes) - (traces[t] * traces[t])) * probes / Math.Max(1, probes - 1);
                        var standardError = Math.Sqrt(variance / probes);
                        var bound = tolerance * Math.Abs(exact[t] + traces[t]);
                        unsettled |= probes < 2 || Math.Abs(traces[t] - previous) > bound || standardError > bound;
                    }

                    converged |= !unsettled;
                }

                progress?.Report(new EstimatorProgress("trace", products, maxProbes));
            }

            var result = diagonals.Select((d, t) =>
            {
                using var mean = d / Math.Max(1, probes);
                if (deflation is not null)
                {
                    mean.add_(deflation.Diagonals[t]);
                }

                return mean.to(ScalarType.Float32).cpu().flatten().data<float>().ToArray();
            }).ToArray();
            return (traces.Select((r, t) => exact[t] + r).ToArray(), result, products);
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
    /// The sketch Hutch++ (Meyer, Musco, Musco and Woodruff, 2021) removes before probing, for the traces of all
    /// diagonal blocks at once: Q is an orthonormal basis of H S for k Rademacher vectors S over all tensors, and
    /// diag(H) = diag(Q Q^T H) + diag((I - Q Q^T) H). The first term is exact from the k products H Q
    /// (diag(Q Q^T H)_i = sum_j Q_ij (H Q)_ij, H being symmetric); Hutchinson's estimator then sees only the
    /// remainder, whose variance loses the energy of the few large eigenvalues a network's Hessian concentrates
    /// on (one per class, roughly). Both are linear in H, so each batch's product is deflated on its own.
    /// </summary>
    internal sealed class Deflation : IDisposable
    {
        private readonly Tensor _basis;
        private readonly long[] _offsets;
        private readonly long[][] _shapes;

        private Deflation(Tensor basis, long[] offsets, long[][] shapes, double[] traces, Tensor[] diagonals, int products)
        {
            _basis = basis;
            _offsets = offsets;
            _shapes = shapes;
            Traces = traces;
            Diagonals = diagonals;
            Products = products;
        }

        /// <summary>tr of each block of Q Q^T H.</summary>
        public double[] Traces { get; }

        /// <summary>diag of each block of Q Q^T H, float64 on the device, in the tensors' shapes.</summary>
        public Tensor[] Diagonals { get; }

        /// <summary>Hessian-vector products the sketch took (2k).</summary>
        public int Products { get; }

        /// <summary>
        /// The sketch of rank <paramref name="rank"/>, or null when that is below 1 or Q would not fit the memory
        /// the analysis allows it (n x k float64 three times over).
        /// </summary>
        public static Deflation? Compute(HessianOracle oracle, int rank, long seed, IProgress<EstimatorProgress>? progress, int maxProducts)
        {
            var parameters = oracle.Parameters;
            var sizes = parameters.Select(p => p.numel()).ToArray();
            var total = sizes.Sum();
            rank = (int)Math.Min(rank, Math.Min(total, MaxSketchBytes / (3 * 8 * total)));
            if (rank < 1)
            {
                return null;
            }

            var offsets = new long[sizes.Length + 1];
            for (var t = 0; t < sizes.Length; t++)
            {
                offsets[t + 1] = offsets[t] + sizes[t];
            }

            var shapes = parameters.Select(p => p.shape).ToArray();
            var device = parameters[0].device;

            // Y = H S, then Q from its QR factorisation (reduced: n x k).
            var sketches = Enumerable.Range(0, rank).Select(j =>
            {
                // Its own stream of the seed, apart from the probes' (probe indices) and the power iteration's (-1 - t).
                var random = new SplitMix64(seed, -1_000_000 - j);
                var values = new float[total];
                random.Rademacher(values);
                return tensor(values, ScalarType.Float64).to(device);
            }).ToArray();
            using var y = Multiply(oracle, sketches, offsets, shapes);
            foreach (var s in sketches)
            {
                s.Dispose();
            }

            progress?.Report(new EstimatorProgress("trace", rank, maxProducts));
            var (q, r) = linalg.qr(y);
            r.Dispose();
            var columns = Enumerable.Range(0, (int)q.shape[1]).Select(j => q[.., j].contiguous()).ToArray();
            using var z = Multiply(oracle, columns, offsets, shapes);
            foreach (var c in columns)
            {
                c.Dispose();
            }

            progress?.Report(new EstimatorProgress("trace", 2 * rank, maxProducts));
            using var lowDiagonal = (q * z).sum(1);
            var diagonals = new Tensor[sizes.Length];
            var traces = new double[sizes.Length];
            for (var t = 0; t < sizes.Length; t++)
            {
                using var block = lowDiagonal.narrow(0, offsets[t], sizes[t]);
                traces[t] = block.sum().item<double>();
                diagonals[t] = block.reshape(shapes[t]).clone();
            }

            return new Deflation(q, offsets, shapes, traces, diagonals, 2 * rank);
        }

        /// <summary>(I - Q Q^T) applied to one batch's Hessian-vector product, per tensor in float32 as it came.</summary>
        public IList<Tensor> Remainder(IList<Tensor> product)
        {
            using var flat = cat(product.Select(p => p.flatten().to(ScalarType.Float64)).ToList());
            using var coefficients = _basis.t().mv(flat);
            using var rest = flat - _basis.mv(coefficients);
            return Split(rest, _offsets, _shapes);
        }

        public void Dispose()
        {
            _basis.Dispose();
            foreach (var d in Diagonals)
            {
                d.Dispose();
            }
        }

        // A flat float64 vector over all tensors, cut into the tensors' shapes in float32, as products take them.
        private static List<Tensor> Split(Tensor flat, long[] offsets, long[][] shapes) =>
            Enumerable.Range(0, shapes.Length)
                .Select(t => flat.narrow(0, offsets[t], offsets[t + 1] - offsets[t]).reshape(shapes[t]).to(ScalarType.Float32))
                .ToList();

        // H V for the columns V (each a flat float64 vector over all tensors), summed over the batches: n x k.
        private static Tensor Multiply(HessianOracle oracle, Tensor[] columns, long[] offsets, long[][] shapes)
        {
            var sums = zeros([offsets[^1], columns.Length], ScalarType.Float64, columns[0].device);
            oracle.ForEachBatch(batch =>
            {
                using var weight = batch.Weight.ToScalar();
                for (var j = 0; j < columns.Length; j++)
                {
                    var v = Split(columns[j], offsets, shapes);
                    var hv = cat(batch.Product(v).Select(h => h.flatten().to(ScalarType.Float64)).ToList());
                    sums[.., j].add_(hv, weight);
                }
            });
            return sums;
        }
    }

    /// <summary>Memory the sketch may take: Y, Q and H Q, n x k float64 each.</summary>
    private const long MaxSketchBytes = 1L << 30;

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
