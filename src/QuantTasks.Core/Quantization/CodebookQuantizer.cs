using QuantTasks.Randomness;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Quantization;

/// <summary>
/// Quantizers whose levels are a codebook per channel (Choi et al., "Towards the Limit of Network Quantization"):
/// k-means, Hessian-weighted k-means (the same algorithm on a tensor prepared with the Hessian diagonal as
/// weights, so that centres are Hessian-weighted means and the distortion minimised is sum h (w - c)^2), and
/// entropy-constrained scalar quantization, either as uniform cells with (weighted) mean centres or by the
/// iterative Lloyd-like algorithm that minimises distortion plus lambda times code length. Pruned elements keep a
/// centre pinned at exactly zero.
/// </summary>
internal static class CodebookQuantizer
{
    private const int MaxLloydIterations = 300;
    private const int MaxEcsqIterations = 100;

    /// <summary>k-means with k-means++ seeding from <paramref name="seed"/>; weighted when the tensor was prepared with a Hessian diagonal.</summary>
    public static QuantizedTensor KMeans(PreparedTensor tensor, int bits, long seed)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckBits(bits);
        var levels = 1 << bits;
        var results = tensor.Channels.Select((channel, c) => KMeansChannel(channel, levels, new SplitMix64(seed, c))).ToArray();
        return Build(tensor, bits, results, tensor.IsHessianWeighted ? "hessian-kmeans" : "kmeans");
    }

    /// <summary>
    /// ECSQ as uniform quantization: 2^bits equal cells over each channel's range, each reconstructed at the
    /// (Hessian-weighted) mean of its members. At high rates, uniform cells followed by an entropy coder are
    /// within 0.255 bits of optimal ECSQ.
    /// </summary>
    public static QuantizedTensor EcsqUniform(PreparedTensor tensor, int bits)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckBits(bits);
        var levels = 1 << bits;
        return Build(tensor, bits, tensor.Channels.Select(c => UniformCells(c, levels)).ToArray(), "ecsq");
    }

    /// <summary>
    /// ECSQ by the iterative algorithm of Chou, Lookabaugh and Gray: starting from uniform cells, assign each
    /// weight to the centre minimising h (w - c)^2 + lambda' (-log2 p_c), then move centres to their weighted
    /// means and update the probabilities, until nothing moves. <paramref name="lambda"/> is dimensionless:
    /// lambda' = lambda times the channel's weighted variance times its mean weight, so 0 is plain (weighted)
    /// k-means and larger values trade distortion for fewer bits.
    /// </summary>
    public static QuantizedTensor EcsqIterative(PreparedTensor tensor, int bits, double lambda)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckBits(bits);
        ArgumentOutOfRangeException.ThrowIfNegative(lambda);
        var levels = 1 << bits;
        return Build(tensor, bits, tensor.Channels.Select(c => IterativeEcsq(c, levels, lambda)).ToArray(), "ecsq");
    }

    private static void CheckBits(int bits)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, 8);
    }

    /// <summary>A channel's result: sorted distinct centres, and the centre index of each sorted member.</summary>
    private sealed record ChannelResult(float[] Centres, int[] Assignment);

    private static ChannelResult KMeansChannel(PreparedTensor.ChannelData channel, int levels, SplitMix64 random)
    {
        var pinZero = channel.Pruned.Length > 0;
        var n = channel.Count;
        var free = pinZero ? levels - 1 : levels;
        if (n == 0 || free == 0)
        {
            return Finish(channel, [0.0], pinZero);
        }

        var distinct = Distinct(channel);
        if (distinct.Count <= free)
        {
            // As many levels as values: each value is its own exact centre.
            var exact = distinct.Select(v => (double)v).ToList();
            if (pinZero && !exact.Contains(0))
            {
                exact.Add(0);
            }

            return Finish(channel, exact.Order().ToArray(), pinZero);
        }

        var centres = Seed(channel, free, pinZero, ref random);
        var pinned = pinZero ? Array.IndexOf(centres, 0.0) : -1;
        var bounds = new int[centres.Length + 1];
        var previous = new int[centres.Length + 1];
        for (var iteration = 0; iteration < MaxLloydIterations; iteration++)
        {
            Boundaries(channel, centres, bounds);
            if (iteration > 0 && bounds.AsSpan().SequenceEqual(previous))
            {
                break;
            }

            bounds.CopyTo(previous, 0);
            for (var j = 0; j < centres.Length; j++)
            {
                if (j != pinned && channel.Weight(bounds[j], bounds[j + 1]) > 0)
                {
                    centres[j] = channel.Mean(bounds[j], bounds[j + 1]);
                }
            }

            // Means of adjacent runs of sorted data stay in order, so the centres stay sorted (the pinned zero
            // included: a run's mean lies inside the run).
            Array.Sort(centres);
            pinned = pinZero ? Array.IndexOf(centres, 0.0) : -1;
        }

        return Finish(channel, centres, pinZero);
    }

    /// <summary>
    /// k-means++ seeding on sorted data: the next centre is drawn with probability proportional to its weighted
    /// squared distance to the nearest centre. The mass of every run between midpoints comes from the prefix sums,
    /// and the drawn point inside a run is found by bisection, so seeding costs O(k (k + log n)).
    /// </summary>
    private static double[] Seed(PreparedTensor.ChannelData channel, int count, bool pinZero, ref SplitMix64 random)
    {
        var centres = new List<double>();
        if (pinZero)
        {
            centres.Add(0);
        }
        else
        {
            var target = random.NextDouble() * channel.W0[^1];
            centres.Add(channel.Sorted[Math.Min(channel.Count - 1, UpperBound(channel.W0, target) - 1)]);
        }

        var extra = pinZero ? 1 : 0;
        var bounds = new int[count + extra + 1];
        while (centres.Count < count + extra)
        {
            centres.Sort();
            var current = centres.ToArray();
            Boundaries(channel, current, bounds.AsSpan(0, current.Length + 1));
            var costs = new double[current.Length];
            double total = 0;
            for (var j = 0; j < current.Length; j++)
            {
                costs[j] = channel.Cost(bounds[j], bounds[j + 1], current[j]);
                total += costs[j];
            }

            if (total <= 0)
            {
                break;
            }

            var u = random.NextDouble() * total;
            var run = 0;
            while (run < current.Length - 1 && u >= costs[run])
            {
                u -= costs[run];
                run++;
            }

            // The smallest end e in the run with Cost(start, e) > u: the point at e - 1 is drawn.
            int lo = bounds[run] + 1, hi = bounds[run + 1];
            while (lo < hi)
            {
                var mid = (lo + hi) >>> 1;
                if (channel.Cost(bounds[run], mid, current[run]) > u)
                {
                    hi = mid;
                }
                else
                {
                    lo = mid + 1;
                }
            }

            var drawn = (double)channel.Sorted[Math.Max(bounds[run], Math.Min(lo, bounds[run + 1]) - 1)];
            if (centres.Contains(drawn))
            {
                // Only possible through rounding in the prefix sums; take the farthest point of the run instead.
                var first = channel.Sorted[bounds[run]];
                var last = channel.Sorted[Math.Max(bounds[run], bounds[run + 1] - 1)];
                drawn = Math.Abs(first - current[run]) >= Math.Abs(last - current[run]) ? first : last;
                if (centres.Contains(drawn))
                {
                    break;
                }
            }

            centres.Add(drawn);
        }

        centres.Sort();
        return centres.ToArray();
    }

    private static ChannelResult UniformCells(PreparedTensor.ChannelData channel, int levels)
    {
        var pinZero = channel.Pruned.Length > 0;
        var n = channel.Count;
        var cells = pinZero ? levels - 1 : levels;
        if (n == 0 || cells == 0)
        {
            return Finish(channel, [0.0], pinZero);
        }

        double min = channel.Sorted[0], max = channel.Sorted[^1];
        var width = (max - min) / cells;
        var centres = new List<double>();
        var assignment = new int[n];
        var start = 0;
        for (var cell = 0; cell < cells && start < n; cell++)
        {
            var end = cell == cells - 1 || width == 0 ? n : channel.LowerBound(min + ((cell + 1) * width));
            if (end > start)
            {
                var centre = channel.Weight(start, end) > 0 ? channel.Mean(start, end) : (channel.Sorted[start] + (double)channel.Sorted[end - 1]) / 2;
                assignment.AsSpan(start, end - start).Fill(centres.Count);
                centres.Add(centre);
                start = end;
            }
        }

        return WithPinnedZero(centres.ToArray(), assignment, pinZero);
    }

    /// <summary>
    /// lambda' = lambda x mean weight x weighted variance of a channel's unpruned members: the price of one bit in
    /// the units of the channel's weighted distortion h (w - c)^2 (0 for a channel with no members).
    /// </summary>
    internal static double RateWeight(PreparedTensor.ChannelData channel, double lambda)
    {
        ArgumentNullException.ThrowIfNull(channel);
        if (channel.Count == 0)
        {
            return 0;
        }

        var totalWeight = channel.W0[^1];
        var mean = channel.W1[^1] / totalWeight;
        var variance = Math.Max(0, (channel.W2[^1] / totalWeight) - (mean * mean));
        return lambda * (totalWeight / channel.Count) * variance;
    }

    private static ChannelResult IterativeEcsq(PreparedTensor.ChannelData channel, int levels, double lambda)
    {
        var initial = UniformCells(channel, levels);
        var n = channel.Count;
        if (n == 0)
        {
            return initial;
        }

        var pinZero = channel.Pruned.Length > 0;
        var centres = initial.Centres.Select(c => (double)c).ToArray();
        var assignment = initial.Assignment;
        var total = n + channel.Pruned.Length;

        var rateWeight = RateWeight(channel, lambda);
        var zeroIndex = pinZero ? Array.IndexOf(centres, 0.0) : -1;

        var counts = new long[centres.Length];
        var lengths = new double[centres.Length];
        var sums = new double[centres.Length];
        var weights = new double[centres.Length];
        for (var iteration = 0; iteration < MaxEcsqIterations; iteration++)
        {
            // With the rate term and per-weight importance, a centre's members need not be contiguous, so moved
            // centres can pass each other; the search below needs them sorted.
            SortCentres(centres, assignment, ref zeroIndex);
            Array.Clear(counts);
            foreach (var a in assignment)
            {
                counts[a]++;
            }

            if (zeroIndex >= 0)
            {
                counts[zeroIndex] += channel.Pruned.Length;
            }

            for (var j = 0; j < centres.Length; j++)
            {
                lengths[j] = counts[j] == 0 ? double.PositiveInfinity : -Math.Log2((double)counts[j] / total);
            }

            var changed = 0;
            Array.Clear(sums);
            Array.Clear(weights);
            for (var i = 0; i < n; i++)
            {
                double x = channel.Sorted[i];
                double h = channel.Weights[i];
                var best = Nearest(centres, x);
                var bestCost = Cost(x, h, centres[best], rateWeight, lengths[best]);

                // Moving away from x only increases h (x - c)^2, so a side's search stops once that alone
                // exceeds the best total cost.
                for (var j = best - 1; j >= 0 && h * (x - centres[j]) * (x - centres[j]) < bestCost; j--)
                {
                    var cost = Cost(x, h, centres[j], rateWeight, lengths[j]);
                    if (cost < bestCost)
                    {
                        (best, bestCost) = (j, cost);
                    }
                }

                for (var j = best + 1; j < centres.Length && h * (x - centres[j]) * (x - centres[j]) < bestCost; j++)
                {
                    var cost = Cost(x, h, centres[j], rateWeight, lengths[j]);
                    if (cost < bestCost)
                    {
                        (best, bestCost) = (j, cost);
                    }
                }

                if (assignment[i] != best)
                {
                    assignment[i] = best;
                    changed++;
                }

                sums[best] += h * x;
                weights[best] += h;
            }

            for (var j = 0; j < centres.Length; j++)
            {
                if (j != zeroIndex && weights[j] > 0)
                {
                    centres[j] = sums[j] / weights[j];
                }
            }

            if (changed == 0 && iteration > 0)
            {
                break;
            }
        }

        // Empty centres are dropped and the rest renumbered in ascending order.
        var used = new bool[centres.Length];
        foreach (var a in assignment)
        {
            used[a] = true;
        }

        if (zeroIndex >= 0)
        {
            used[zeroIndex] = true;
        }

        var kept = Enumerable.Range(0, centres.Length).Where(j => used[j]).OrderBy(j => centres[j]).ToArray();
        var renumber = new int[centres.Length];
        for (var k = 0; k < kept.Length; k++)
        {
            renumber[kept[k]] = k;
        }

        return new ChannelResult(
            kept.Select(j => (float)centres[j]).ToArray(),
            assignment.Select(a => renumber[a]).ToArray());
    }

    private static void SortCentres(double[] centres, int[] assignment, ref int zeroIndex)
    {
        var order = Enumerable.Range(0, centres.Length).OrderBy(j => centres[j]).ThenBy(j => j).ToArray();
        if (order.Select((j, k) => j == k).All(same => same))
        {
            return;
        }

        var rank = new int[centres.Length];
        for (var k = 0; k < order.Length; k++)
        {
            rank[order[k]] = k;
        }

        var sorted = order.Select(j => centres[j]).ToArray();
        sorted.CopyTo(centres, 0);
        for (var i = 0; i < assignment.Length; i++)
        {
            assignment[i] = rank[assignment[i]];
        }

        if (zeroIndex >= 0)
        {
            zeroIndex = rank[zeroIndex];
        }
    }

    private static double Cost(double x, double h, double centre, double rateWeight, double length) =>
        (h * (x - centre) * (x - centre)) + (rateWeight * length);

    /// <summary>Adds the zero centre (if pruned elements need it) and renumbers the assignment.</summary>
    private static ChannelResult WithPinnedZero(double[] centres, int[] assignment, bool pinZero)
    {
        if (!pinZero || centres.Contains(0))
        {
            return new ChannelResult(centres.Select(c => (float)c).ToArray(), assignment);
        }

        var position = 0;
        while (position < centres.Length && centres[position] < 0)
        {
            position++;
        }

        var all = centres.Take(position).Append(0).Concat(centres.Skip(position)).ToArray();
        return new ChannelResult(all.Select(c => (float)c).ToArray(), assignment.Select(a => a >= position ? a + 1 : a).ToArray());
    }

    /// <summary>Nearest-centre assignment of every sorted member to the float32 centres.</summary>
    private static ChannelResult Finish(PreparedTensor.ChannelData channel, double[] centres, bool pinZero)
    {
        var list = centres.Select(c => (float)c).Distinct().ToList();
        if (pinZero && !list.Contains(0f))
        {
            list.Add(0f);
        }

        list.Sort();
        var stored = list.ToArray();
        var asDouble = stored.Select(c => (double)c).ToArray();
        var bounds = new int[stored.Length + 1];
        Boundaries(channel, asDouble, bounds);
        var assignment = new int[channel.Count];
        for (var j = 0; j < stored.Length; j++)
        {
            assignment.AsSpan(bounds[j], bounds[j + 1] - bounds[j]).Fill(j);
        }

        return new ChannelResult(stored, assignment);
    }

    /// <summary>For sorted centres, the sorted positions where each one's run starts (midpoint thresholds).</summary>
    private static void Boundaries(PreparedTensor.ChannelData channel, double[] centres, Span<int> bounds)
    {
        bounds[0] = 0;
        for (var j = 0; j + 1 < centres.Length; j++)
        {
            bounds[j + 1] = channel.LowerBound((centres[j] + centres[j + 1]) / 2);
        }

        bounds[centres.Length] = channel.Count;
    }

    private static List<float> Distinct(PreparedTensor.ChannelData channel)
    {
        var result = new List<float>();
        foreach (var v in channel.Sorted)
        {
            if (result.Count == 0 || result[^1] != v)
            {
                result.Add(v);
            }
        }

        return result;
    }

    private static int Nearest(double[] centres, double x)
    {
        int lo = 0, hi = centres.Length - 1;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (centres[mid] < x)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo > 0 && Math.Abs(centres[lo - 1] - x) <= Math.Abs(centres[lo] - x) ? lo - 1 : lo;
    }

    private static int UpperBound(double[] prefix, double target)
    {
        int lo = 0, hi = prefix.Length;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (prefix[mid] <= target)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    /// <summary>Codebooks padded to 2^bits with zeros, and every element's symbol.</summary>
    private static QuantizedTensor Build(PreparedTensor tensor, int bits, ChannelResult[] results, string method)
    {
        var levels = 1 << bits;
        var codebooks = new float[results.Length * levels];
        var symbols = new byte[tensor.Values.Length];
        for (var c = 0; c < results.Length; c++)
        {
            var result = results[c];
            var channel = tensor.Channels[c];
            if (result.Centres.Length > levels)
            {
                throw new InvalidOperationException($"Channel {c} of '{tensor.Name}' has {result.Centres.Length} centres for {levels} levels.");
            }

            result.Centres.CopyTo(codebooks, c * levels);
            for (var i = 0; i < channel.Count; i++)
            {
                symbols[channel.Order[i]] = (byte)result.Assignment[i];
            }

            if (channel.Pruned.Length > 0)
            {
                var zero = (byte)Array.IndexOf(result.Centres, 0f);
                foreach (var i in channel.Pruned)
                {
                    symbols[i] = zero;
                }
            }
        }

        return new QuantizedTensor(tensor.Name, tensor.Dims, bits, QuantizerKind.Codebook, tensor.ChannelAxis, codebooks, symbols, method);
    }
}
