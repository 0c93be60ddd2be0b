using QuantTasks.Blob;
using QuantTasks.Compensation;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Weights;

namespace QuantTasks.Search;

/// <summary>What the Hessian analysis says about one tensor, as the search uses it.</summary>
/// <param name="Sensitivity">Trace / params (HAWQ-V2) or top eigenvalue / params (HAWQ-V1).</param>
/// <param name="Diagonal">The Hessian block's diagonal, for Hessian-weighted quantizers; null when not estimated.</param>
internal sealed record TensorSensitivityInput(double Sensitivity, float[]? Diagonal);

/// <summary>The search's choice for one tensor: which candidate, and what it costs. No quantized data: that is the quantize stage's.</summary>
/// <param name="Plan">The tensor's plan.</param>
/// <param name="Bits">Bits per symbol, or null when kept in float32.</param>
/// <param name="Sparsity">Fraction pruned to exact zeros.</param>
/// <param name="Mask">The pruning mask (true = pruned), or null for none.</param>
/// <param name="Sensitivity">The sensitivity used (1 without analysis).</param>
/// <param name="Diagonal">The Hessian diagonal the quantizer weights by, or null.</param>
/// <param name="ChannelAxis">The axis with one set of levels per index, or -1.</param>
/// <param name="Omega">The chosen candidate's cost.</param>
/// <param name="Bytes">Its exact payload bytes in the blob.</param>
/// <param name="Compensation">The layer Hessian and settings of compensated rounding, or null for plain rounding.</param>
/// <param name="Quantizer">The quantizer, or null for float (or for the plan's only one).</param>
internal sealed record TensorChoice(TensorPlan Plan, int? Bits, double Sparsity, bool[]? Mask, double Sensitivity, float[]? Diagonal, int ChannelAxis, double Omega, long Bytes,
    CompensationInput? Compensation = null, Quantizer? Quantizer = null)
{
    /// <summary>The tensor.</summary>
    public WeightTensor Weight => Plan.Weight;

    /// <summary>The quantizer that makes the stored levels, or null for float.</summary>
    public Quantizer? QuantizedBy => Bits is null ? null : Quantizer ?? Plan.Quantizer;

    /// <summary>The quantizer's name, or <c>float</c>.</summary>
    public string Method => QuantizedBy?.Name ?? "float";

    /// <summary>The tensor prepared for its quantizer: values, channel layout, mask and diagonal.</summary>
    public PreparedTensor Prepare(float[] values) =>
        PreparedTensor.Create(Weight.Name, values, Weight.Shape, ChannelAxis, Diagonal, Mask);
}

/// <summary>What compensated rounding of one tensor needs: its layer's Hessian and the settings.</summary>
internal sealed record CompensationInput(LayerHessian Hessian, CompensationOptions Options);

/// <summary>The search's result.</summary>
/// <param name="Tensors">One choice per weight, in catalog order.</param>
/// <param name="Budget">The budget in payload bytes.</param>
/// <param name="OriginalBytes">The weights' float32 bytes.</param>
/// <param name="PayloadBytes">The sum of the choices' bytes.</param>
/// <param name="Space">Every candidate the search weighed, to choose again with other costs (the joint check); null for results made by hand.</param>
internal sealed record SearchResult(IReadOnlyList<TensorChoice> Tensors, long Budget, long OriginalBytes, long PayloadBytes, SearchSpace? Space = null);

/// <summary>A choice with the tensor quantized as it chose (what <see cref="MixedPrecisionSearch.Run"/> gives).</summary>
/// <param name="Choice">The choice.</param>
/// <param name="Stored">The tensor as the blob stores it.</param>
internal sealed record TensorDecision(TensorChoice Choice, StoredTensor Stored)
{
    public WeightTensor Weight => Choice.Weight;

    public int? Bits => Choice.Bits;

    public string Method => Choice.Method;

    public double Sparsity => Choice.Sparsity;

    public double Omega => Choice.Omega;

    public long Bytes => Choice.Bytes;
}

/// <summary>The search's choices with every tensor quantized.</summary>
internal sealed record SearchOutcome(IReadOnlyList<TensorDecision> Tensors, long Budget, long OriginalBytes, long PayloadBytes);

/// <summary>The inputs of a search besides the model: the policy's sections and the analysis.</summary>
/// <param name="Quantization">Methods, candidates, budget, keep_float, overrides, search algorithm.</param>
/// <param name="Pruning">Sparsity and its scope.</param>
/// <param name="Entropy">Whether the blob entropy-codes symbols (sizes depend on it).</param>
/// <param name="Sensitivities">Per tensor name; null or missing entries mean sensitivity 1 and no diagonal.</param>
/// <param name="MeasureLoss">For <see cref="OmegaKind.Measured"/> and <see cref="OmegaKind.CalibratedOutputError"/>: the loss increase with one tensor replaced by a candidate, by ONNX Runtime.</param>
/// <param name="LayerHessians">For compensated rounding: the layer Hessian per tensor name (tensors without one are rounded plainly).</param>
/// <param name="Compensation">The settings of compensated rounding, or null for none.</param>
internal sealed record SearchInputs(QuantizationOptions Quantization, PruningOptions Pruning, bool Entropy, IReadOnlyDictionary<string, TensorSensitivityInput>? Sensitivities,
    ILossMeasurement? MeasureLoss = null, IReadOnlyDictionary<string, LayerHessian>? LayerHessians = null, CompensationOptions? Compensation = null);

/// <summary>
/// HAWQ's mixed-precision search with exact sizes (Choi et al.): every tensor is quantized at every candidate
/// bit width by its method; each candidate gets Omega = sensitivity x ||Q(W) - W||^2 and its exact payload bytes
/// after the entropy coder; then one candidate per tensor is chosen to minimise the summed Omega within the
/// budget. Pruning happens first and is part of W's error. The search returns choices; <see cref="Quantize"/>
/// turns a choice into the stored tensor again, deterministically the same. Candidates are computed in parallel
/// but each depends on its tensor alone.
/// </summary>
internal static class MixedPrecisionSearch
{
    /// <summary>Plans, chooses and quantizes in one call (the default quantizers): what a caller without stages wants.</summary>
    public static SearchOutcome Run(IReadOnlyList<WeightTensor> weights, IReadOnlyList<float[]> values, SearchInputs inputs,
        IProgress<double>? progress = null, int parallelism = -1)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var plans = TensorPlan.For(weights, inputs.Quantization, QuantizerRegistry.Default);
        var result = Choose(plans, values, inputs, progress, parallelism);
        var settings = QuantizerSettings.From(inputs.Quantization);
        var decisions = new TensorDecision[result.Tensors.Count];
        Parallel.For(0, decisions.Length, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, t =>
            decisions[t] = new TensorDecision(result.Tensors[t], Quantize(result.Tensors[t], values[t], settings)));
        return new SearchOutcome(decisions, result.Budget, result.OriginalBytes, result.PayloadBytes);
    }

    /// <summary>The chosen candidate of one tensor, quantized (or kept in float) as the blob stores it.</summary>
    public static StoredTensor Quantize(TensorChoice choice, float[] values, QuantizerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(choice);
        var weight = choice.Weight;
        if (choice.Bits is not { } bits)
        {
            return StoredTensor.KeptInFloat(weight.Name, weight.Shape, weight.DataType, values);
        }

        return StoredTensor.Of(Candidate(choice.QuantizedBy!, choice.Prepare(values), bits, settings, values, choice.Mask, choice.Compensation).Tensor, weight.DataType);
    }

    /// <summary>
    /// One candidate as the search measures it and the blob stores it: the quantizer's levels, compensated when
    /// asked; then with its layer output error against <paramref name="original"/> on the compensation's Hessian.
    /// </summary>
    private static (QuantizedTensor Tensor, double? OutputError) Candidate(Quantizer quantizer, PreparedTensor prepared, int bits, QuantizerSettings settings,
        float[] original, bool[]? mask, CompensationInput? compensation)
    {
        var quantized = quantizer.Quantize(prepared, bits, settings);
        if (compensation is null)
        {
            return (quantized, null);
        }

        var (tensor, outputError) = Compensator.ApplyMeasured(quantized, original, mask, compensation.Hessian, compensation.Options, quantizer.RateOf(prepared, settings));
        return (tensor, outputError);
    }

    /// <summary>Chooses one candidate per planned tensor within the budget.</summary>
    /// <param name="plans">The tensors' plans.</param>
    /// <param name="values">Their float values, in the same order.</param>
    /// <param name="inputs">Policy and analysis.</param>
    /// <param name="progress">Fraction of tensors evaluated, 0 to 1.</param>
    /// <param name="parallelism">Tensors evaluated at once; -1 for all cores.</param>
    /// <param name="cancellation">Stops between candidates.</param>
    /// <exception cref="QuantException">QT1601 for an infeasible budget, QT1602 for a method or Omega that needs a diagonal the analysis did not give.</exception>
    public static SearchResult Choose(IReadOnlyList<TensorPlan> plans, IReadOnlyList<float[]> values, SearchInputs inputs,
        IProgress<double>? progress = null, int parallelism = -1, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(plans);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(inputs);
        var options = inputs.Quantization;
        if (options.Omega.MeasuresLoss() && inputs.MeasureLoss is null)
        {
            throw new ArgumentException($"quantization.omega {options.Omega} needs a loss measurement.", nameof(inputs));
        }

        var settings = QuantizerSettings.From(options);
        var analysed = plans.Select(p => Analysed(p, options.Omega, inputs.Sensitivities)).ToArray();
        var masks = PruningMasks(plans, values, inputs.Pruning);

        // Candidates per tensor: every (sparsity, axis, quantizer, bits), sparsity-major (TensorPlan.Variant orders
        // the rest). Without searched sparsities there is one "sparsity", the fixed mask above.
        var sparsities = inputs.Pruning.Candidates.Count > 0
            ? inputs.Pruning.Candidates.Distinct().Order().ToArray()
            : null;
        bool[]? MaskFor(int t, int s) => sparsities is null ? masks[t]
            : sparsities[s] > 0 ? MagnitudePruning.PerTensor(values[t], sparsities[s]) : null;
        var sparsityCount = sparsities?.Length ?? 1;
        float[]? DiagonalOf(int t, Quantizer quantizer) => quantizer.UsesHessianDiagonal ? analysed[t].Diagonal : null;
        CompensationInput? CompensationOf(int t) =>
            inputs.Compensation is { } compensation && inputs.LayerHessians?.GetValueOrDefault(plans[t].Weight.Name) is { } hessian
                ? new CompensationInput(hessian, compensation) : null;

        var candidates = new CandidateCost[plans.Count][];
        var done = 0;
        // At most one tensor per core, even when "all cores": a measured candidate waits for its turn at ONNX Runtime,
        // and the thread pool would start more tensors meanwhile, each holding its layer's factorisation (ResNet-50
        // reached 3.3 GB in this stage with unbounded parallelism).
        var tensorsAtOnce = parallelism > 0 ? parallelism : Environment.ProcessorCount;
        using var wideLayer = new SemaphoreSlim(1);
        Parallel.For(0, plans.Count, new ParallelOptions { MaxDegreeOfParallelism = tensorsAtOnce, CancellationToken = cancellation }, t =>
        {
            // One wide layer's factorisation at a time: it is n x n float64 (ResNet-18's 4,608-input convolutions:
            // 170 MB) and its candidates' buffers come with it; two at once made the search's peak (ResNet-18: 2.00
            // GB, one at a time 1.70 GB, for 5% more time). The factorisation and the rounding use both cores anyway.
            var wide = CompensationOf(t) is { } compensated && compensated.Hessian.FactorBytes >= WideFactorBytes;
            if (wide)
            {
                wideLayer.Wait(cancellation);
            }

            try
            {
                Evaluate(t);
            }
            finally
            {
                if (wide)
                {
                    wideLayer.Release();
                }
            }

            progress?.Report((double)Interlocked.Increment(ref done) / plans.Count);
        });

        void Evaluate(int t)
        {
            var plan = plans[t];
            if (!plan.Quantized)
            {
                candidates[t] = [new CandidateCost(0, PayloadSize.KeptInFloat(values[t].Length))];
            }
            else
            {
                var importance = options.Omega == OmegaKind.HessianDiagonal ? PreparedTensor.ImportanceWeights(analysed[t].Diagonal!) : null;
                var layer = options.Omega.UsesLayerHessians() ? inputs.LayerHessians?.GetValueOrDefault(plan.Weight.Name) : null;

                // The float output's energy tr(W H W^T) (the error of rounding everything to zero), once per tensor.
                var scale = layer is not null && options.Omega == OmegaKind.RelativeOutputError
                    ? 1 / Math.Max(double.Epsilon, layer.OutputError(values[t], new float[values[t].Length]))
                    : 1;
                // calibrated-output-error: the candidate whose measured loss puts this tensor's output errors into
                // the loss's units: the plain (unpruned) candidate nearest 4 bits, in the middle of the range where
                // the loss is still quadratic in the error yet well above a forward pass's rounding noise.
                var calibrated = options.Omega == OmegaKind.CalibratedOutputError;
                var reference = calibrated ? Enumerable.Range(0, plan.Variants).MinBy(v => (Math.Abs(plan.Variant(v).Bits - CalibrationBits), v)) : -1;
                float[]? referenceValues = null;
                // measured: every candidate of this tensor on the part of the graph it reaches, its inputs computed once.
                using var probe = options.Omega == OmegaKind.Measured ? inputs.MeasureLoss!.Probe(plan.Weight.Name, sparsityCount * plan.Variants) : null;
                candidates[t] = Enumerable.Range(0, sparsityCount).SelectMany(s =>
                {
                    var mask = MaskFor(t, s);
                    // One prepared layout per axis and diagonal, shared by the quantizers and widths that use it.
                    var layouts = new Dictionary<(int Axis, bool Diagonal), PreparedTensor>();
                    return Enumerable.Range(0, plan.Variants).Select(variant =>
                    {
                        cancellation.ThrowIfCancellationRequested();
                        var (axis, quantizer, bits) = plan.Variant(variant);
                        var diagonal = DiagonalOf(t, quantizer);
                        if (!layouts.TryGetValue((axis, diagonal is not null), out var prepared))
                        {
                            layouts[(axis, diagonal is not null)] = prepared = PreparedTensor.Create(plan.Weight.Name, values[t], plan.Weight.Shape, axis, diagonal, mask);
                        }

                        var compensation = CompensationOf(t);
                        var (quantized, compensatedError) = Candidate(quantizer, prepared, bits, settings, values[t], mask, compensation);
                        var dequantized = options.Omega == OmegaKind.Measured || layer is not null || (s == 0 && variant == reference) ? quantized.Dequantize() : null;
                        if (s == 0 && variant == reference)
                        {
                            referenceValues = dequantized;
                        }

                        var omega = probe is not null
                            ? Math.Max(0, probe.Increase(dequantized!))
                            : layer is not null
                            ? (compensatedError is { } known && ReferenceEquals(layer, compensation!.Hessian) ? known : layer.OutputError(values[t], dequantized!)) * scale
                            : importance is null
                            ? analysed[t].Sensitivity * TensorQuantizer.SquaredError(quantized, values[t])
                            : TensorQuantizer.WeightedSquaredError(quantized, values[t], importance);
                        return new CandidateCost(omega, PayloadSize.Of(quantized, inputs.Entropy));
                    });
                }).ToArray();
                CompensationOf(t)?.Hessian.ReleaseMemory();
                if (calibrated)
                {
                    var measured = Math.Max(0, inputs.MeasureLoss!.Increase(plan.Weight.Name, referenceValues!));
                    var outputError = candidates[t][reference].Omega;
                    var toLoss = outputError > 0 ? measured / outputError : 0;
                    candidates[t] = candidates[t].Select(c => c with { Omega = c.Omega * toLoss }).ToArray();
                }
            }
        }

        var originalBytes = plans.Sum(p => p.Weight.Params * 4);
        var budget = Budget(options.Budget, originalBytes, plans.Sum(p => p.Weight.Params));

        // A candidate index back to the choice it stands for: the same mask, width, axis and compensation the
        // candidate was measured with, so that quantizing the choice again gives the measured result.
        TensorChoice Materialize(int t, int index)
        {
            var plan = plans[t];
            var cost = candidates[t][index];
            if (!plan.Quantized)
            {
                return new TensorChoice(plan, null, 0, null, analysed[t].Sensitivity, null, -1, 0, cost.Bytes);
            }

            var mask = MaskFor(t, index / plan.Variants);
            var sparsity = mask is null ? 0 : (double)mask.Count(m => m) / mask.Length;
            var (axis, quantizer, bits) = plan.Variant(index % plan.Variants);
            return new TensorChoice(plan, bits, sparsity, mask, analysed[t].Sensitivity,
                DiagonalOf(t, quantizer), axis, cost.Omega, cost.Bytes, CompensationOf(t), quantizer);
        }

        var space = new SearchSpace(candidates, budget, originalBytes, options.Search, Materialize);
        return space.Choose(t => candidates[t].Select(c => c.Omega).ToArray());
    }

    /// <summary>Factorisations from this size on are made one at a time (see <see cref="Choose"/>).</summary>
    private const long WideFactorBytes = 64L << 20;

    /// <summary>The bit width whose candidate calibrates <see cref="OmegaKind.CalibratedOutputError"/>.</summary>
    private const int CalibrationBits = 4;

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

    /// <summary>The analysis's figures for a planned tensor; QT1602 when its method or the Omega needs a diagonal that is missing.</summary>
    private static TensorSensitivityInput Analysed(TensorPlan plan, OmegaKind omega, IReadOnlyDictionary<string, TensorSensitivityInput>? sensitivities)
    {
        var analysis = sensitivities?.GetValueOrDefault(plan.Weight.Name);
        if (!plan.Quantized)
        {
            return new TensorSensitivityInput(analysis?.Sensitivity ?? 1.0, null);
        }

        if (plan.Methods.FirstOrDefault(m => m.Requires.HasFlag(QuantizerNeeds.HessianDiagonal)) is { } needy && analysis?.Diagonal is null)
        {
            throw new QuantException(ErrorCode.QuantizerNeedsHessian,
                $"Tensor '{plan.Weight.Name}' is to be quantized by {needy.Name}, which needs the Hessian diagonal; it comes from the trace analysis (sensitivity.method: trace, with data.calibration). Or use kmeans.");
        }

        if (omega == OmegaKind.HessianDiagonal && analysis?.Diagonal is null)
        {
            throw new QuantException(ErrorCode.QuantizerNeedsHessian,
                $"quantization.omega is hessian-diagonal, which needs the Hessian diagonal of tensor '{plan.Weight.Name}'; it comes from the trace analysis (sensitivity.method: trace, with data.calibration). Or use omega: sensitivity.");
        }

        return new TensorSensitivityInput(analysis?.Sensitivity ?? 1.0, analysis?.Diagonal);
    }

    private static bool[]?[] PruningMasks(IReadOnlyList<TensorPlan> plans, IReadOnlyList<float[]> values, PruningOptions pruning)
    {
        var masks = new bool[]?[plans.Count];
        if (pruning.Sparsity <= 0)
        {
            return masks;
        }

        var quantized = Enumerable.Range(0, plans.Count).Where(t => plans[t].Quantized).ToArray();
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
