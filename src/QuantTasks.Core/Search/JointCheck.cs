using QuantTasks.Blob;
using QuantTasks.Quantization;

namespace QuantTasks.Search;

/// <summary>The joint check's settings (<c>quantization.joint_check</c>).</summary>
/// <param name="Margin">How far (a fraction) the measured loss may exceed the assumed sum before the search corrects itself.</param>
/// <param name="Rounds">Most correction rounds.</param>
/// <param name="Worst">Tensors re-measured in context per round (the ones the assumption underrated most); 0 for a quarter of them, at least one.</param>
/// <param name="MaxPasses">Most forward passes of the whole check; correction rounds stop before they would exceed it.</param>
internal sealed record JointCheckOptions(double Margin, int Rounds, int Worst = 0, int MaxPasses = int.MaxValue)
{
    /// <summary>
    /// A measured loss this close to the assumed one is agreement whatever the margin: one ten-thousandth of a
    /// nat of KL or cross-entropy is below what a forward pass on a few hundred samples resolves.
    /// </summary>
    public const double AbsoluteTolerance = 1e-4;
}

/// <summary>What the joint check found and did, for the report.</summary>
/// <param name="Assumed">The loss increase the search assumed: each chosen tensor's own, measured alone, summed.</param>
/// <param name="Measured">The loss increase of the search's result, every tensor quantized at once.</param>
/// <param name="Final">The loss increase of what the check hands on (the measured one when nothing changed).</param>
/// <param name="Rounds">Correction rounds run.</param>
/// <param name="Passes">Forward passes over the samples the check took.</param>
/// <param name="Moved">Tensors whose candidate changed.</param>
/// <param name="Trigger">What made the check correct: <c>margin</c> (the joint loss exceeded the sum), <c>gate</c> (the sum held, but the accuracy gate would fail), or null when it passed.</param>
internal sealed record JointCheckReport(double Assumed, double Measured, double Final, int Rounds, int Passes, IReadOnlyList<string> Moved, string? Trigger = null)
{
    /// <summary>Whether the search's result was replaced.</summary>
    public bool Corrected => Moved.Count > 0;
}

/// <summary>The checked result: the choices and stored tensors to go on with.</summary>
internal sealed record JointCheckOutcome(SearchResult Search, StoredTensor[] Stored, JointCheckReport Report);

/// <summary>
/// The search adds up per-tensor costs as if each tensor's error were alone; once every tensor moves at once
/// they are not. The joint check measures the combined result in one forward pass and compares it with the sum the
/// search assumed. When the combined loss exceeds the sum by more than the margin, it corrects the choice:
/// <list type="number">
/// <item>Each quantized tensor's contribution in context is the joint loss minus the loss with that tensor alone
/// restored to float (leave one out).</item>
/// <item>The tensors whose contribution exceeds their assumed cost most have every candidate measured again in
/// that context (the others quantized as chosen); the rest keep their costs, scaled into loss units and by how
/// much their context inflated them.</item>
/// <item>The budget is solved again over the same candidates with those costs, and the new choice is kept only
/// when its measured joint loss is lower.</item>
/// </list>
/// Sizes come from the search's candidates, so the budget still holds to the byte. When the losses do add up but
/// the accuracy gate would fail on the result, the same rounds run (the search's Omega may rate some tensors wrong
/// even where each tensor's loss is additive), until the gate would pass or no round lowers the loss.
/// </summary>
internal static class JointCheck
{
    /// <summary>Runs the check, and the correction rounds when it fails.</summary>
    /// <param name="search">The search's result (with its <see cref="SearchResult.Space"/>).</param>
    /// <param name="values">The float values per tensor, in catalog order.</param>
    /// <param name="stored">The tensors as quantized, in catalog order.</param>
    /// <param name="settings">The quantizers' settings, to quantize a new choice as the search did.</param>
    /// <param name="loss">The loss increase over the float model with the given tensors (by catalog index) replaced by the given values, the others float.</param>
    /// <param name="omegaIsLoss">Whether the search's Omega is already that loss increase, measured alone (omega: measured), which saves measuring each tensor alone.</param>
    /// <param name="measureAloneToCorrect">
    /// With <paramref name="omegaIsLoss"/>: the Omega only estimates each tensor's own loss (calibrated output errors).
    /// When the sum held but the gate would fail, the estimates' ranking of the tensors is what is in doubt, so each
    /// tensor is measured alone before the rounds pick the ones to correct (when max_passes leaves room for it). When
    /// the sum did not hold, the leave-one-out contributions already show which tensors compound.
    /// </param>
    /// <param name="options">Margin and rounds.</param>
    /// <param name="gateFails">Whether the accuracy gate would fail with the given tensors replaced (the others float), or null without a gate.</param>
    /// <param name="cancellation">Stops between forward passes.</param>
    public static JointCheckOutcome Run(SearchResult search, IReadOnlyList<float[]> values, StoredTensor[] stored, QuantizerSettings settings,
        Func<IReadOnlyList<(int Tensor, float[] Values)>, double> loss, bool omegaIsLoss, JointCheckOptions options,
        Func<IReadOnlyList<(int Tensor, float[] Values)>, bool>? gateFails = null, bool measureAloneToCorrect = false,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(search);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(stored);
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(options);
        var passes = 0;
        double Measure(IReadOnlyList<(int Tensor, float[] Values)> replaced)
        {
            cancellation.ThrowIfCancellationRequested();
            Interlocked.Increment(ref passes);
            return loss(replaced);
        }

        var quantized = Enumerable.Range(0, search.Tensors.Count).Where(t => search.Tensors[t].Bits is not null).ToArray();
        var current = stored.ToArray();
        var dequantized = current.Select(s => s.Quantized?.Dequantize()).ToArray();
        (int, float[])[] All(int except = -1, int tensor = -1, float[]? replacement = null) =>
            quantized.Where(t => t != except || tensor == except).Select(t => (t, t == tensor ? replacement! : dequantized[t]!)).ToArray();

        // Loops that measure wait for ONNX Runtime's turn; one body per core keeps the thread pool from starting more.
        var perCore = new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellation };

        // Each chosen tensor's own loss increase: the search's Omega when it is one, else measured alone.
        var alone = new double[search.Tensors.Count];
        Parallel.ForEach(quantized, perCore, t =>
            alone[t] = omegaIsLoss ? search.Tensors[t].Omega : Math.Max(0, Measure([(t, dequantized[t]!)])));
        var assumed = quantized.Sum(t => alone[t]);
        var joint = quantized.Length == 0 ? 0 : Measure(All());
        var measured = joint;
        var initiallyAssumed = assumed;
        var result = search;
        var moved = new SortedSet<string>(StringComparer.Ordinal);
        var rounds = 0;
        var space = search.Space;
        // Once the check fails, rounds go on while each one lowers the joint loss.
        var inContext = new Dictionary<int, double[]>();
        string? trigger = joint > (1 + options.Margin) * assumed + JointCheckOptions.AbsoluteTolerance ? "margin"
            : quantized.Length > 0 && space is not null && gateFails is not null && gateFails(All()) ? "gate"
            : null;
        // A round takes one tensor's candidates at least and the trial.
        var minimum = space is null || quantized.Length == 0 ? 0 : quantized.Min(t => space.Candidates(t).Count) + 1;
        if (trigger == "gate" && omegaIsLoss && measureAloneToCorrect && passes + quantized.Length + minimum <= options.MaxPasses)
        {
            Parallel.ForEach(quantized, perCore, t =>
                alone[t] = Math.Max(0, Measure([(t, dequantized[t]!)])));
            omegaIsLoss = false;
        }

        while (trigger is not null && space is not null && rounds < options.Rounds)
        {
            // At least the minimum round, and a pass per tensor left out when max_passes leaves room for them.
            if (passes + minimum > options.MaxPasses)
            {
                break;
            }

            var leaveOneOut = passes + quantized.Length + minimum <= options.MaxPasses;

            rounds++;
            var chosen = quantized.ToDictionary(t => t, t => space.IndexOf(t, result.Tensors[t]));
            if (chosen.Values.Any(k => k < 0))
            {
                break; // a later stage changed a choice into one the search never weighed
            }

            // Leave one out: each tensor's contribution with every other tensor quantized. Without room for it, each
            // tensor's contribution is its own loss inflated as much as the whole's.
            var without = new double[search.Tensors.Count];
            var inflation = quantized.Sum(t => alone[t]) is var sum && sum > 0 ? joint / sum : 1;
            Parallel.ForEach(quantized, perCore, t =>
                without[t] = leaveOneOut ? Measure(All(except: t)) : joint - (alone[t] * inflation));
            var context = quantized.ToDictionary(t => t, t => joint - without[t]);
            var worstCount = options.Worst > 0 ? options.Worst : Math.Max(1, (quantized.Length + 3) / 4);
            // For the gate every tensor is a suspect, the most inflated and then the costliest first.
            var worst = quantized.Where(t => !inContext.ContainsKey(t) && (trigger == "gate" || context[t] > (1 + options.Margin) * alone[t]))
                .OrderByDescending(t => context[t] - alone[t]).ThenByDescending(t => context[t]).ThenBy(t => t).Take(worstCount).ToList();
            var room = options.MaxPasses - passes - 1;
            for (var k = 0; k < worst.Count; k++)
            {
                room -= space.Candidates(worst[k]).Count;
                if (room < 0)
                {
                    worst.RemoveRange(k, worst.Count - k);
                    break;
                }
            }

            if (worst.Count == 0)
            {
                break;
            }

            // The worst tensors' candidates, measured in context: loss with the candidate in place of the choice.
            // Earlier rounds' measurements stay, as estimates in a context that has moved little since.
            foreach (var t in worst)
            {
                var costs = new double[space.Candidates(t).Count];
                Parallel.For(0, costs.Length, perCore, k =>
                {
                    var candidate = k == chosen[t] ? dequantized[t]! : Quantize(space.Choice(t, k), values[t], settings).Quantized!.Dequantize();
                    costs[k] = Math.Max(0, Measure(All(except: t, tensor: t, replacement: candidate)) - without[t]);
                });
                inContext[t] = costs;

                // Its candidates shared one factorisation of the layer Hessian (every candidate of a tensor holds the
                // same Hessian); dropped now, so a large network does not hold every layer's factor at once.
                space.Choice(t, 0).Compensation?.Hessian.ReleaseMemory();
            }

            // The others' Omegas in loss units: scaled so that the chosen candidate costs what it adds in context.
            var scales = quantized.Where(t => !inContext.ContainsKey(t) && space.Candidates(t)[chosen[t]].Omega > 0)
                .ToDictionary(t => t, t => Math.Max(context[t], alone[t]) / space.Candidates(t)[chosen[t]].Omega);
            var typical = scales.Count > 0 ? Median(scales.Values) : 1;
            var proposal = space.Choose(t =>
                inContext.TryGetValue(t, out var costs) ? costs
                : space.Candidates(t).Select(c => c.Omega * scales.GetValueOrDefault(t, typical)).ToArray());

            var changed = quantized.Where(t => space.IndexOf(t, proposal.Tensors[t]) != chosen[t]).ToArray();
            if (changed.Length == 0)
            {
                break;
            }

            // The tensors that did not move keep their choice as it stands, with its exact size: a stage before the
            // check (sequential compensation) may have refined it after the search, into a result whose size differs
            // from the candidate's by a few bytes. Where those refinements no longer fit beside the moved tensors,
            // they go back to the search's own candidates, whose sizes the proposal was solved with.
            var movers = changed.ToHashSet();
            var proposed = proposal.Tensors.Select((c, t) => movers.Contains(t) ? c : result.Tensors[t]).ToArray();
            var requantize = changed.ToList();
            if (proposed.Sum(c => c.Bytes) > proposal.Budget)
            {
                foreach (var t in Enumerable.Range(0, proposed.Length).Where(t => !movers.Contains(t) && proposed[t].Bytes != proposal.Tensors[t].Bytes))
                {
                    proposed[t] = proposal.Tensors[t];
                    requantize.Add(t);
                }
            }

            var trial = current.ToArray();
            var trialValues = dequantized.ToArray();
            Parallel.ForEach(requantize, perCore, t =>
            {
                trial[t] = Quantize(proposed[t], values[t], settings);
                proposed[t].Compensation?.Hessian.ReleaseMemory();
                trialValues[t] = trial[t].Quantized?.Dequantize() ?? trial[t].FloatValues!;
            });
            var trialJoint = Measure(quantized.Select(t => (t, trialValues[t]!)).ToArray());
            if (trialJoint >= joint)
            {
                break;
            }

            // The moved tensors' own losses serve the next round only: without room for them there is none.
            var lastRound = !omegaIsLoss && passes + changed.Length > options.MaxPasses;
            foreach (var t in changed)
            {
                moved.Add(search.Tensors[t].Weight.Name);
                alone[t] = omegaIsLoss ? proposal.Tensors[t].Omega : lastRound ? alone[t] : Math.Max(0, Measure([(t, trialValues[t]!)]));
            }

            // Each new choice keeps the Omega the search gave it, so that the report compares like with like.
            result = proposal with { Tensors = proposed, PayloadBytes = proposed.Sum(c => c.Bytes) };
            current = trial;
            dequantized = trialValues;
            joint = trialJoint;
            if (lastRound || (trigger == "gate" && !gateFails!(All())))
            {
                break;
            }
        }

        return new JointCheckOutcome(result, current, new JointCheckReport(initiallyAssumed, measured, joint, rounds, passes, moved.ToArray(), trigger));
    }

    private static StoredTensor Quantize(TensorChoice choice, float[] values, QuantizerSettings settings) =>
        MixedPrecisionSearch.Quantize(choice, values, settings);

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
