using QuantTasks.Diagnostics;
using QuantTasks.Search;

namespace QuantTasks.Core.Tests.Search;

/// <summary>The allocation against brute force on small random instances, and the budget always holds.</summary>
public sealed class BitAllocationTests
{
    [Fact]
    public void The_dynamic_programme_equals_brute_force_on_random_instances()
    {
        var random = new Random(1);
        for (var instance = 0; instance < 300; instance++)
        {
            var candidates = RandomInstance(random, tensors: random.Next(1, 6), options: random.Next(1, 5));
            var smallest = BitAllocation.SmallestSize(candidates);
            var largest = candidates.Sum(o => o.Max(c => c.Bytes));
            var budget = random.NextInt64(smallest, largest + 1);

            var chosen = BitAllocation.Exact(candidates, budget);

            var (bestOmega, _) = BruteForce(candidates, budget);
            Assert.True(Bytes(candidates, chosen) <= budget);
            Assert.Equal(bestOmega, Omega(candidates, chosen), 9);
        }
    }

    [Fact]
    public void Greedy_meets_the_budget_and_is_never_better_than_exact()
    {
        var random = new Random(2);
        for (var instance = 0; instance < 200; instance++)
        {
            var candidates = RandomInstance(random, tensors: random.Next(1, 7), options: random.Next(1, 6));
            var budget = random.NextInt64(BitAllocation.SmallestSize(candidates), candidates.Sum(o => o.Max(c => c.Bytes)) + 1);
            var greedy = BitAllocation.Greedy(candidates, budget);
            var exact = BitAllocation.Exact(candidates, budget);
            Assert.True(Bytes(candidates, greedy) <= budget);
            Assert.True(Omega(candidates, exact) <= Omega(candidates, greedy) + 1e-9);
        }
    }

    [Fact]
    public void A_budget_too_large_for_byte_states_is_met_in_units_and_still_holds()
    {
        // Sizes in the millions: the programme works in units of ceil(budget / MaxStates) bytes.
        var random = new Random(3);
        for (var instance = 0; instance < 5; instance++)
        {
            var candidates = Enumerable.Range(0, 30).Select(_ => (IReadOnlyList<CandidateCost>)Enumerable.Range(0, 5)
                .Select(_ => new CandidateCost(random.NextDouble(), random.NextInt64(100_000, 3_000_000))).ToArray()).ToArray();
            var budget = (BitAllocation.SmallestSize(candidates) + candidates.Sum(o => o.Max(c => c.Bytes))) / 2;
            var chosen = BitAllocation.Exact(candidates, budget);
            Assert.True(Bytes(candidates, chosen) <= budget);
            Assert.True(Omega(candidates, chosen) <= Omega(candidates, BitAllocation.Greedy(candidates, budget)) + 1e-9);
        }
    }

    [Fact]
    public void The_budget_holds_for_any_instance()
    {
        for (var seed = 0; seed < 2000; seed++)
        {
            var random = new Random(seed);
            var candidates = RandomInstance(random, random.Next(1, 8), random.Next(1, 6));
            var budget = random.NextInt64(BitAllocation.SmallestSize(candidates), candidates.Sum(o => o.Max(c => c.Bytes)) + 1);
            Assert.True(Bytes(candidates, BitAllocation.Exact(candidates, budget)) <= budget, $"seed {seed}");
            Assert.True(Bytes(candidates, BitAllocation.Greedy(candidates, budget)) <= budget, $"seed {seed}");
        }
    }

    [Fact]
    public void An_infeasible_budget_names_the_smallest_reachable_size()
    {
        IReadOnlyList<CandidateCost>[] candidates =
        [
            [new(1, 100), new(0.5, 200)],
            [new(2, 50), new(0, 400)],
        ];
        var error = Assert.Throws<QuantException>(() => BitAllocation.Exact(candidates, 149));
        Assert.Equal(ErrorCode.BudgetInfeasible, error.Code);
        Assert.Contains("150 bytes", error.Message, StringComparison.Ordinal);
        Assert.Throws<QuantException>(() => BitAllocation.Greedy(candidates, 149));
        Assert.Equal([0, 0], BitAllocation.Exact(candidates, 150));
        Assert.Equal([1, 1], BitAllocation.Exact(candidates, 600));
    }

    private static IReadOnlyList<CandidateCost>[] RandomInstance(Random random, int tensors, int options) =>
        Enumerable.Range(0, tensors).Select(_ => (IReadOnlyList<CandidateCost>)Enumerable.Range(0, options)
            .Select(_ => new CandidateCost(Math.Round(random.NextDouble() * 10, 3), random.Next(1, 60))).ToArray()).ToArray();

    private static (double Omega, long Bytes) BruteForce(IReadOnlyList<CandidateCost>[] candidates, long budget)
    {
        var best = (Omega: double.PositiveInfinity, Bytes: 0L);
        var choice = new int[candidates.Length];
        while (true)
        {
            var bytes = Bytes(candidates, choice);
            var omega = Omega(candidates, choice);
            if (bytes <= budget && omega < best.Omega)
            {
                best = (omega, bytes);
            }

            var t = 0;
            while (t < choice.Length && ++choice[t] == candidates[t].Count)
            {
                choice[t++] = 0;
            }

            if (t == choice.Length)
            {
                return best;
            }
        }
    }

    private static long Bytes(IReadOnlyList<CandidateCost>[] candidates, int[] choice) => choice.Select((o, t) => candidates[t][o].Bytes).Sum();

    private static double Omega(IReadOnlyList<CandidateCost>[] candidates, int[] choice) => choice.Select((o, t) => candidates[t][o].Omega).Sum();
}
