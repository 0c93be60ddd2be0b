using QuantTasks.Blob;
using QuantTasks.Diagnostics;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Weights;

namespace QuantTasks.Search;

/// <summary>What the Hessian analysis says about one tensor, as the search uses it.</summary>
/// <param name="Sensitivity">Trace / params (HAWQ-V2) or top eigenvalue / params (HAWQ-V1).</param>
/// <param name="Diagonal">The Hessian block's diagonal, for Hessian-weighted quantizers; null when not estimated.</param>
public sealed record TensorSensitivityInput(double Sensitivity, float[]? Diagonal);

/// <summary>The search's decision for one tensor.</summary>
/// <param name="Weight">The tensor.</param>
/// <param name="Bits">Bits per symbol, or null when kept in float32.</param>
/// <param name="Method">The quantizer (for float tensors, the policy's method).</param>
/// <param name="Sparsity">Fraction pruned to exact zeros.</param>
/// <param name="Sensitivity">The sensitivity used (1 without analysis).</param>
/// <param name="Omega">Sensitivity x squared error of the chosen candidate.</param>
/// <param name="Bytes">Exact payload bytes in the blob.</param>
/// <param name="Stored">The tensor as the blob stores it.</param>
public sealed record TensorDecision(WeightTensor Weight, int? Bits, QuantizationMethod Method, double Sparsity, double Sensitivity, double Omega, long Bytes, StoredTensor Stored);

/// <summary>The search's result.</summary>
/// <param name="Tensors">One decision per weight, in catalog order.</param>
/// <param name="Budget">The budget in payload bytes.</param>
/// <param name="OriginalBytes">The weights' float32 bytes.</param>
/// <param name="PayloadBytes">The sum of the decisions' bytes.</param>
public sealed record SearchResult(IReadOnlyList<TensorDecision> Tensors, long Budget, long OriginalBytes, long PayloadBytes);

/// <summary>The inputs of a search besides the model: the policy's sections and the analysis.</summary>
/// <param name="Quantization">Methods, candidates, budget, keep_float, overrides, search algorithm.</param>
/// <param name="Pruning">Sparsity and its scope.</param>
/// <param name="Entropy">Whether the blob entropy-codes symbols (sizes depend on it).</param>
/// <param name="Sensitivities">Per tensor name; null or missing entries mean sensitivity 1 and no diagonal.</param>
/// <param name="MeasureLoss">For <see cref="OmegaKind.Measured"/>: the loss increase with one tensor (by name) replaced by the given values.</param>
public sealed record SearchInputs(QuantizationOptions Quantization, PruningOptions Pruning, bool Entropy, IReadOnlyDictionary<string, TensorSensitivityInput>? Sensitivities,
    Func<string, float[], double>? MeasureLoss = null);

/// <summary>
/// HAWQ's mixed-precision search with exact sizes (Choi et al.): every tensor is quantized at every candidate
/// bit width by its method; each candidate gets Omega = sensitivity x ||Q(W) - W||^2 and its exact payload bytes
/// after the entropy coder; then one candidate per tensor is chosen to minimise the summed Omega within the
/// budget. Pruning happens first and is part of W's error. The result is deterministic: candidates are computed
/// in parallel but each depends on its tensor alone.
/// </summary>
public static class MixedPrecisionSearch
{
    /// <summary>Runs the search on the weights of a model.</summary>
    /// <param name="weights">The catalog's tensors.</param>
    /// <param name="values">Their float values, in the same order.</param>
    /// <param name="inputs">Policy and analysis.</param>
    /// <param name="progress">Fraction of tensors evaluated, 0 to 1.</param>
    /// <param name="parallelism">Tensors evaluated at once; -1 for all cores.</param>
    /// <exception cref="QuantException">QT1601 for an infeasible budget, QT1602 for hessian-kmeans without a diagonal.</exception>
    public static SearchResult Run(IReadOnlyList<WeightTensor> weights, IReadOnlyList<float[]> values, SearchInputs inputs,
        IProgress<double>? progress = null, int parallelism = -1)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(inputs);
        var options = inputs.Quantization;
        if (options.Omega == OmegaKind.Measured && inputs.MeasureLoss is null)
        {
            throw new ArgumentException("quantization.omega measured needs a loss measurement.", nameof(inputs));
        }

        var settings = QuantizerSettings.From(options);
        var plans = weights.Select(w => Plan(options, w, inputs.Sensitivities)).ToArray();
        var masks = PruningMasks(plans, values, inputs.Pruning);

        // Candidates per tensor: every (sparsity, bits) pair, sparsity-major. Without searched sparsities there is
        // one "sparsity", the fixed mask above.
        var sparsities = inputs.Pruning.Candidates.Count > 0
            ? inputs.Pruning.Candidates.Distinct().Order().ToArray()
            : null;
        bool[]? MaskFor(int t, int s) => sparsities is null ? masks[t]
            : sparsities[s] > 0 ? MagnitudePruning.PerTensor(values[t], sparsities[s]) : null;
        var sparsityCount = sparsities?.Length ?? 1;

        var candidates = new CandidateCost[weights.Count][];
        var done = 0;
        Parallel.For(0, weights.Count, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, t =>
        {
            var plan = plans[t];
            if (plan.Bits.Length == 0)
            {
                candidates[t] = [new CandidateCost(0, PayloadSize.KeptInFloat(values[t].Length))];
            }
            else
            {
                var importance = options.Omega == OmegaKind.HessianDiagonal ? PreparedTensor.ImportanceWeights(plan.Diagonal!) : null;
                candidates[t] = Enumerable.Range(0, sparsityCount).SelectMany(s =>
                {
                    var prepared = Prepare(plan, values[t], MaskFor(t, s), options.Granularity);
                    return plan.Bits.Select(bits =>
                    {
                        var quantized = TensorQuantizer.Quantize(prepared, plan.Method, bits, settings);
                        var omega = options.Omega == OmegaKind.Measured
                            ? Math.Max(0, inputs.MeasureLoss!(plan.Weight.Name, quantized.Dequantize()))
                            : importance is null
                            ? plan.Sensitivity * TensorQuantizer.SquaredError(quantized, values[t])
                            : TensorQuantizer.WeightedSquaredError(quantized, values[t], importance);
                        return new CandidateCost(omega, PayloadSize.Of(quantized, inputs.Entropy));
                    });
                }).ToArray();
            }

            progress?.Report((double)Interlocked.Increment(ref done) / weights.Count * 0.9);
        });

        var originalBytes = weights.Sum(w => w.Params * 4);
        var budget = Budget(options.Budget, originalBytes, weights.Sum(w => w.Params));
        var chosen = options.Search == SearchAlgorithm.Greedy
            ? BitAllocation.Greedy(candidates, budget)
            : BitAllocation.Exact(candidates, budget);

        // Only the chosen candidates are quantized again (deterministically the same) to build what the blob
        // stores, rather than holding every candidate's symbols in memory.
        var decisions = new TensorDecision[weights.Count];
        Parallel.For(0, weights.Count, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, t =>
        {
            var plan = plans[t];
            var weight = weights[t];
            var cost = candidates[t][chosen[t]];
            if (plan.Bits.Length == 0)
            {
                decisions[t] = new TensorDecision(weight, null, plan.Method, 0, plan.Sensitivity, 0, cost.Bytes,
                    StoredTensor.KeptInFloat(weight.Name, weight.Shape, weight.DataType, values[t]));
                return;
            }

            var prepared = Prepare(plan, values[t], MaskFor(t, chosen[t] / plan.Bits.Length), options.Granularity);
            var bits = plan.Bits[chosen[t] % plan.Bits.Length];
            var quantized = TensorQuantizer.Quantize(prepared, plan.Method, bits, settings);
            decisions[t] = new TensorDecision(weight, bits, plan.Method, prepared.Sparsity, plan.Sensitivity, cost.Omega, cost.Bytes,
                StoredTensor.Of(quantized, weight.DataType));
        });
        progress?.Report(1);
        return new SearchResult(decisions, budget, originalBytes, decisions.Sum(d => d.Bytes));
    }

    /// <summary>The budget in payload bytes: the ratio and average bits are turned into bytes, rounding down.</summary>
    public static long Budget(BudgetOptions budget, long originalBytes, long parameters)
    {
        ArgumentNullException.ThrowIfNull(budget);
        if (budget.MaxSize is { } size)
        {
            return size.Bytes;
        }

        if (budget.AverageBits is { } bits)
        {
            return (long)Math.Floor(bits * parameters / 8);
        }

        return (long)Math.Floor(originalBytes / (budget.CompressionRatio ?? 8));
    }

    /// <summary>Whether the policy keeps a tensor in float32 (<c>keep_float</c>).</summary>
    public static bool KeepsFloat(QuantizationOptions options, WeightTensor weight)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(weight);
        return options.KeepFloat.Any(p => Glob.IsMatch(p, weight.Name));
    }

    /// <summary>The first override matching a tensor, or null.</summary>
    public static OverrideOptions? OverrideFor(QuantizationOptions options, WeightTensor weight)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(weight);
        return options.Overrides.FirstOrDefault(o => Glob.IsMatch(o.Match, weight.Name));
    }

    /// <summary>A tensor's fixed part of the decision: keep_float, then the first matching override.</summary>
    private sealed record TensorPlan(WeightTensor Weight, int[] Bits, QuantizationMethod Method, double Sensitivity, float[]? Diagonal);

    private static TensorPlan Plan(QuantizationOptions options, WeightTensor weight, IReadOnlyDictionary<string, TensorSensitivityInput>? sensitivities)
    {
        var analysis = sensitivities?.GetValueOrDefault(weight.Name);
        var sensitivity = analysis?.Sensitivity ?? 1.0;
        if (KeepsFloat(options, weight))
        {
            return new TensorPlan(weight, [], options.Method, sensitivity, null);
        }

        var match = OverrideFor(options, weight);
        var method = match?.Method ?? options.Method;
        if (method == QuantizationMethod.HessianKmeans && analysis?.Diagonal is null)
        {
            throw new QuantException(ErrorCode.QuantizerNeedsHessian,
                $"Tensor '{weight.Name}' is to be quantized by hessian-kmeans, which needs the Hessian diagonal; it comes from the trace analysis (sensitivity.method: trace, with data.calibration). Or use kmeans.");
        }

        if (options.Omega == OmegaKind.HessianDiagonal && analysis?.Diagonal is null)
        {
            throw new QuantException(ErrorCode.QuantizerNeedsHessian,
                $"quantization.omega is hessian-diagonal, which needs the Hessian diagonal of tensor '{weight.Name}'; it comes from the trace analysis (sensitivity.method: trace, with data.calibration). Or use omega: sensitivity.");
        }

        var bits = match?.Bits is { } fixedBits ? [fixedBits] : options.Bits.Distinct().Order().ToArray();
        return new TensorPlan(weight, bits, method, sensitivity, analysis?.Diagonal);
    }

    private static PreparedTensor Prepare(TensorPlan plan, float[] values, bool[]? mask, Granularity granularity)
    {
        var axis = granularity == Granularity.PerChannel ? plan.Weight.OutputChannelAxis : -1;
        var diagonal = TensorQuantizer.UsesHessianDiagonal(plan.Method) ? plan.Diagonal : null;
        return PreparedTensor.Create(plan.Weight.Name, values, plan.Weight.Shape, axis, diagonal, mask);
    }

    private static bool[]?[] PruningMasks(TensorPlan[] plans, IReadOnlyList<float[]> values, PruningOptions pruning)
    {
        var masks = new bool[]?[plans.Length];
        if (pruning.Sparsity <= 0)
        {
            return masks;
        }

        var quantized = Enumerable.Range(0, plans.Length).Where(t => plans[t].Bits.Length > 0).ToArray();
        if (pruning.Scope == PruningScope.Global)
        {
            var global = MagnitudePruning.Global(quantized.Select(t => values[t]).ToArray(), pruning.Sparsity);
            for (var k = 0; k < quantized.Length; k++)
            {
                masks[quantized[k]] = global[k];
            }
        }
        else
        {
            foreach (var t in quantized)
            {
                masks[t] = MagnitudePruning.PerTensor(values[t], pruning.Sparsity);
            }
        }

        return masks;
    }
}
