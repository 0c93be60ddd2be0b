using QuantTasks.Policy;

namespace QuantTasks.Search;

/// <summary>
/// Every candidate a search weighed, per tensor: its Omega and exact size, and the way back from a candidate index
/// to the choice it stands for. A later stage that learns more about the candidates' costs (the joint check
/// measures them in context) chooses again here without quantizing anything twice.
/// </summary>
internal sealed class SearchSpace
{
    private readonly CandidateCost[][] _candidates;
    private readonly Func<int, int, TensorChoice> _materialize;

    /// <summary>Creates the space.</summary>
    /// <param name="candidates">Per tensor, its candidates' costs (for float tensors, one).</param>
    /// <param name="budget">The budget in payload bytes.</param>
    /// <param name="originalBytes">The weights' float32 bytes.</param>
    /// <param name="algorithm">How choices are made under the budget.</param>
    /// <param name="materialize">Tensor and candidate index to the choice.</param>
    public SearchSpace(CandidateCost[][] candidates, long budget, long originalBytes, SearchAlgorithm algorithm, Func<int, int, TensorChoice> materialize)
    {
        _candidates = candidates;
        Budget = budget;
        OriginalBytes = originalBytes;
        Algorithm = algorithm;
        _materialize = materialize;
    }

    /// <summary>The budget in payload bytes.</summary>
    public long Budget { get; }

    /// <summary>The weights' float32 bytes.</summary>
    public long OriginalBytes { get; }

    /// <summary>Dynamic programming or the greedy order.</summary>
    public SearchAlgorithm Algorithm { get; }

    /// <summary>Tensors, in catalog order.</summary>
    public int Count => _candidates.Length;

    /// <summary>A tensor's candidates, in the search's order.</summary>
    public IReadOnlyList<CandidateCost> Candidates(int tensor) => _candidates[tensor];

    /// <summary>The choice a candidate stands for, with its Omega and size from the search.</summary>
    public TensorChoice Choice(int tensor, int candidate) => _materialize(tensor, candidate);

    /// <summary>The index of <paramref name="choice"/> among its tensor's candidates (matched by quantizer, axis, width and sparsity), or -1.</summary>
    public int IndexOf(int tensor, TensorChoice choice)
    {
        ArgumentNullException.ThrowIfNull(choice);
        for (var k = 0; k < _candidates[tensor].Length; k++)
        {
            var candidate = _materialize(tensor, k);
            if (candidate.Bits == choice.Bits && candidate.Sparsity.Equals(choice.Sparsity) && candidate.ChannelAxis == choice.ChannelAxis && candidate.Method == choice.Method)
            {
                return k;
            }
        }

        return -1;
    }

    /// <summary>
    /// Chooses one candidate per tensor within the budget, minimising the summed <paramref name="cost"/> (per tensor,
    /// one value per candidate) with the candidates' exact sizes.
    /// </summary>
    public SearchResult Choose(Func<int, double[]> cost)
    {
        ArgumentNullException.ThrowIfNull(cost);
        var weighed = new CandidateCost[_candidates.Length][];
        for (var t = 0; t < weighed.Length; t++)
        {
            var costs = cost(t);
            if (costs.Length != _candidates[t].Length)
            {
                throw new ArgumentException($"Tensor {t} has {_candidates[t].Length} candidates, not {costs.Length}.", nameof(cost));
            }

            weighed[t] = _candidates[t].Select((c, k) => c with { Omega = costs[k] }).ToArray();
        }

        var chosen = Algorithm == SearchAlgorithm.Greedy ? BitAllocation.Greedy(weighed, Budget) : BitAllocation.Exact(weighed, Budget);
        var choices = chosen.Select((k, t) => _materialize(t, k)).ToArray();
        return new SearchResult(choices, Budget, OriginalBytes, choices.Sum(c => c.Bytes), this);
    }
}
