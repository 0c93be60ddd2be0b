using QuantTasks.Diagnostics;

namespace QuantTasks.Search;

/// <summary>One way to store one tensor: its cost in the blob and the loss it is expected to add.</summary>
/// <param name="Omega">Sensitivity x squared quantization error (HAWQ's Omega); 0 for float.</param>
/// <param name="Bytes">Exact payload bytes.</param>
internal readonly record struct CandidateCost(double Omega, long Bytes);

/// <summary>
/// Chooses one candidate per tensor to minimise the summed Omega with the summed bytes within a budget: a
/// multiple-choice knapsack. <see cref="Exact"/> solves it by dynamic programming over the total size, in bytes
/// when the budget allows at most <see cref="MaxStates"/> states, otherwise in units of ceil(budget / MaxStates)
/// bytes with every size rounded up, so the budget always holds and at most one unit per tensor is given away.
/// <see cref="Greedy"/> is HAWQ-V1's way, kept for comparison.
/// </summary>
internal static class BitAllocation
{
    /// <summary>The size resolution of the dynamic programme: this many states at most.</summary>
    public const int MaxStates = 1 << 18;

    /// <summary>The optimal choice (index into each tensor's candidates).</summary>
    /// <exception cref="QuantException">QT1601 when even the smallest candidates exceed the budget.</exception>
    public static int[] Exact(IReadOnlyList<IReadOnlyList<CandidateCost>> candidates, long budget)
    {
        CheckFeasible(candidates, budget);

        // A budget that every combination meets (up to long.MaxValue bytes in a policy) leaves each tensor its
        // cheapest-in-Omega candidate, and no size arithmetic may overflow on the way there.
        var largest = candidates.Aggregate(0L, (sum, options) => sum + options.Max(o => o.Bytes));
        if (budget >= largest)
        {
            return candidates.Select(options => Enumerable.Range(0, options.Count).MinBy(o => options[o].Omega)).ToArray();
        }

        var unit = Math.Max(1, (budget + MaxStates - 1) / MaxStates);
        var capacity = (int)(budget / unit);
        var count = candidates.Count;

        // best[c]: least Omega of the tensors so far with at most c units; choice[t][c]: the candidate of tensor t there.
        var best = new double[capacity + 1];
        var next = new double[capacity + 1];
        var choice = new byte[count][];
        for (var t = 0; t < count; t++)
        {
            var options = candidates[t];
            if (options.Count > byte.MaxValue)
            {
                throw new ArgumentException($"Tensor {t} has {options.Count} candidates; at most {byte.MaxValue}.", nameof(candidates));
            }

            var units = options.Select(o => (o.Bytes + unit - 1) / unit).ToArray();
            var chosen = choice[t] = new byte[capacity + 1];
            for (var c = 0; c <= capacity; c++)
            {
                var value = double.PositiveInfinity;
                var pick = 0;
                for (var o = 0; o < options.Count; o++)
                {
                    if (units[o] <= c)
                    {
                        var v = best[c - units[o]] + options[o].Omega;
                        if (v < value)
                        {
                            value = v;
                            pick = o;
                        }
                    }
                }

                next[c] = value;
                chosen[c] = (byte)pick;
            }

            (best, next) = (next, best);
        }

        if (double.IsPositiveInfinity(best[capacity]))
        {
            // Sizes rounded up to units overflow a budget that the smallest candidates meet in bytes (possible
            // only when unit > 1, and only within count units of the smallest size): those candidates are the answer.
            return candidates.Select(options => Enumerable.Range(0, options.Count).MinBy(o => (options[o].Bytes, options[o].Omega))).ToArray();
        }

        var result = new int[count];
        var remaining = capacity;
        for (var t = count - 1; t >= 0; t--)
        {
            var o = choice[t][remaining];
            result[t] = o;
            remaining -= (int)((candidates[t][o].Bytes + unit - 1) / unit);
        }

        return result;
    }

    /// <summary>
    /// HAWQ-V1's greedy allocation: every tensor starts at its largest candidate, then while the total exceeds the
    /// budget, the one move to a smaller candidate with the least Omega added per byte saved is made.
    /// </summary>
    public static int[] Greedy(IReadOnlyList<IReadOnlyList<CandidateCost>> candidates, long budget)
    {
        CheckFeasible(candidates, budget);
        var result = candidates.Select(options => Enumerable.Range(0, options.Count).MaxBy(o => (options[o].Bytes, -options[o].Omega))).ToArray();
        var total = result.Select((o, t) => candidates[t][o].Bytes).Sum();
        while (total > budget)
        {
            var bestRatio = double.PositiveInfinity;
            (int Tensor, int Option) move = (-1, -1);
            for (var t = 0; t < candidates.Count; t++)
            {
                var current = candidates[t][result[t]];
                for (var o = 0; o < candidates[t].Count; o++)
                {
                    var saved = current.Bytes - candidates[t][o].Bytes;
                    if (saved > 0)
                    {
                        var ratio = (candidates[t][o].Omega - current.Omega) / saved;
                        if (ratio < bestRatio)
                        {
                            bestRatio = ratio;
                            move = (t, o);
                        }
                    }
                }
            }

            total -= candidates[move.Tensor][result[move.Tensor]].Bytes - candidates[move.Tensor][move.Option].Bytes;
            result[move.Tensor] = move.Option;
        }

        return result;
    }

    /// <summary>The smallest total size any choice reaches.</summary>
    public static long SmallestSize(IReadOnlyList<IReadOnlyList<CandidateCost>> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        return candidates.Sum(options => options.Min(o => o.Bytes));
    }

    private static void CheckFeasible(IReadOnlyList<IReadOnlyList<CandidateCost>> candidates, long budget)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        if (candidates.Any(options => options.Count == 0))
        {
            throw new ArgumentException("Every tensor needs at least one candidate.", nameof(candidates));
        }

        var smallest = SmallestSize(candidates);
        if (smallest > budget)
        {
            throw new QuantException(ErrorCode.BudgetInfeasible,
                $"No choice of bit widths fits the budget of {budget:N0} bytes: the smallest reachable size is {smallest:N0} bytes. Relax quantization.budget, add smaller widths to quantization.bits, or prune (pruning.sparsity).");
        }
    }
}
