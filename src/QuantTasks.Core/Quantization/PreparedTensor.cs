namespace QuantTasks.Quantization;

/// <summary>
/// One weight tensor made ready to be quantized at many bit widths and by several methods: per channel (or for
/// the whole tensor), its unpruned values sorted, with their importance weights (the Hessian diagonal, or ones)
/// and prefix sums of w, w x and w x^2. In one dimension a cluster of a sorted sample is a contiguous run, so a
/// k-means or ECSQ step costs O(k log n) on these sums instead of O(n k); only writing the symbols is O(n).
/// Sorting happens once per tensor, not once per candidate of the bit search.
/// </summary>
internal sealed class PreparedTensor
{
    private PreparedTensor(string name, float[] values, long[] dims, int channelAxis, ChannelData[] channels, long prunedCount, float[]? elementWeights)
    {
        Name = name;
        Values = values;
        Dims = dims;
        ChannelAxis = channelAxis;
        Channels = channels;
        PrunedCount = prunedCount;
        ElementWeights = elementWeights;
    }

    /// <summary>The tensor's name.</summary>
    public string Name { get; }

    /// <summary>The original (unpruned) values, C order.</summary>
    public float[] Values { get; }

    /// <summary>The shape.</summary>
    public long[] Dims { get; }

    /// <summary>Channel axis of the levels, or -1 for one set for the whole tensor.</summary>
    public int ChannelAxis { get; }

    /// <summary>Elements set to exactly zero by pruning.</summary>
    public long PrunedCount { get; }

    /// <summary>Fraction of elements pruned.</summary>
    public double Sparsity => Values.Length == 0 ? 0 : (double)PrunedCount / Values.Length;

    /// <summary>Whether the importance weights come from a Hessian diagonal (otherwise all ones).</summary>
    public bool IsHessianWeighted => ElementWeights is not null;

    /// <summary>Each element's importance h (the floored Hessian diagonal), C order, or null for equal weights.</summary>
    internal float[]? ElementWeights { get; }

    internal ChannelData[] Channels { get; }

    /// <summary>The values with the pruned elements set to zero.</summary>
    public float[] PrunedValues()
    {
        var result = (float[])Values.Clone();
        foreach (var channel in Channels)
        {
            foreach (var i in channel.Pruned)
            {
                result[i] = 0;
            }
        }

        return result;
    }

    /// <summary>Prepares a tensor.</summary>
    /// <param name="name">Its name.</param>
    /// <param name="values">Its values in C order (not modified).</param>
    /// <param name="dims">Its shape.</param>
    /// <param name="channelAxis">The axis of per-channel levels, or -1.</param>
    /// <param name="hessianDiagonal">Per element, the Hessian's diagonal, or null for equal weights.</param>
    /// <param name="pruned">Per element, whether pruning set it to zero, or null for none.</param>
    public static PreparedTensor Create(string name, float[] values, IReadOnlyList<long> dims, int channelAxis,
        float[]? hessianDiagonal = null, bool[]? pruned = null)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(dims);
        var shape = dims.ToArray();
        if (hessianDiagonal is not null && hessianDiagonal.Length != values.Length)
        {
            throw new ArgumentException($"The Hessian diagonal of '{name}' has {hessianDiagonal.Length} elements; the tensor has {values.Length}.", nameof(hessianDiagonal));
        }

        var weights = hessianDiagonal is null ? null : ImportanceWeights(hessianDiagonal);
        var count = channelAxis < 0 ? 1 : (int)shape[channelAxis];
        var inner = channelAxis < 0 ? values.Length : shape.Skip(channelAxis + 1).Aggregate(1L, (a, b) => a * b);
        var members = new List<int>[count];
        var prunedMembers = new List<int>[count];
        for (var c = 0; c < count; c++)
        {
            members[c] = [];
            prunedMembers[c] = [];
        }

        long prunedCount = 0;
        foreach (var (start, end, c) in ChannelLayout.Runs(values.Length, count, inner))
        {
            for (var i = start; i < end; i++)
            {
                if (pruned is not null && pruned[i])
                {
                    prunedMembers[c].Add(i);
                    prunedCount++;
                }
                else
                {
                    members[c].Add(i);
                }
            }
        }

        var channels = new ChannelData[count];
        for (var c = 0; c < count; c++)
        {
            channels[c] = ChannelData.Create(values, weights, members[c].ToArray(), prunedMembers[c].ToArray());
        }

        return new PreparedTensor(name, values, shape, channelAxis, channels, prunedCount, weights);
    }

    /// <summary>
    /// Hessian diagonals estimated by Hutchinson can be zero or slightly negative where the true value is small;
    /// a weighted mean needs positive weights, so each is raised to a floor of a tenth of the mean positive value.
    /// </summary>
    internal static float[] ImportanceWeights(float[] diagonal)
    {
        double sum = 0;
        var positive = 0;
        foreach (var d in diagonal)
        {
            if (d > 0 && float.IsFinite(d))
            {
                sum += d;
                positive++;
            }
        }

        var floor = positive == 0 ? 1f : (float)(0.1 * sum / positive);
        return diagonal.Select(d => float.IsFinite(d) && d > floor ? d : floor).ToArray();
    }

    /// <summary>One channel's unpruned elements in value order, with prefix sums of their weights.</summary>
    internal sealed class ChannelData
    {
        private ChannelData(int[] order, float[] sorted, float[] weights, double[] w0, double[] w1, double[] w2, int[] pruned)
        {
            Order = order;
            Sorted = sorted;
            Weights = weights;
            W0 = w0;
            W1 = w1;
            W2 = w2;
            Pruned = pruned;
        }

        /// <summary>Element indices of the unpruned members, by ascending value (ties by index).</summary>
        public int[] Order { get; }

        /// <summary>Their values, ascending.</summary>
        public float[] Sorted { get; }

        /// <summary>Their importance weights, in the same order.</summary>
        public float[] Weights { get; }

        /// <summary>Prefix sums (length n + 1) of w, w x and w x^2 over the sorted members.</summary>
        public double[] W0 { get; }

        /// <inheritdoc cref="W0"/>
        public double[] W1 { get; }

        /// <inheritdoc cref="W0"/>
        public double[] W2 { get; }

        /// <summary>Element indices of the pruned members (exact zeros).</summary>
        public int[] Pruned { get; }

        public int Count => Order.Length;

        public static ChannelData Create(float[] values, float[]? weights, int[] members, int[] pruned)
        {
            var keys = members.Select(i => values[i]).ToArray();
            var order = (int[])members.Clone();
            Array.Sort(keys, order);

            // Array.Sort is not stable: equal values are put back in index order, so the order depends on the
            // data alone.
            for (var start = 0; start < keys.Length;)
            {
                var end = start + 1;
                while (end < keys.Length && keys[end] == keys[start])
                {
                    end++;
                }

                if (end - start > 1)
                {
                    Array.Sort(order, start, end - start);
                }

                start = end;
            }

            var sorted = order.Select(i => values[i]).ToArray();
            var w = order.Select(i => weights?[i] ?? 1f).ToArray();
            var n = order.Length;
            var w0 = new double[n + 1];
            var w1 = new double[n + 1];
            var w2 = new double[n + 1];
            for (var i = 0; i < n; i++)
            {
                double x = sorted[i];
                w0[i + 1] = w0[i] + w[i];
                w1[i + 1] = w1[i] + (w[i] * x);
                w2[i + 1] = w2[i] + (w[i] * x * x);
            }

            return new ChannelData(order, sorted, w, w0, w1, w2, pruned);
        }

        /// <summary>Total weight of sorted members [a, b).</summary>
        public double Weight(int a, int b) => W0[b] - W0[a];

        /// <summary>Weighted mean of sorted members [a, b).</summary>
        public double Mean(int a, int b) => (W1[b] - W1[a]) / (W0[b] - W0[a]);

        /// <summary>Weighted squared distance of sorted members [a, b) to <paramref name="centre"/>.</summary>
        public double Cost(int a, int b, double centre) =>
            Math.Max(0, (W2[b] - W2[a]) - (2 * centre * (W1[b] - W1[a])) + (centre * centre * (W0[b] - W0[a])));

        /// <summary>The first sorted position whose value is at least <paramref name="threshold"/>.</summary>
        public int LowerBound(double threshold)
        {
            int lo = 0, hi = Sorted.Length;
            while (lo < hi)
            {
                var mid = (lo + hi) >>> 1;
                if (Sorted[mid] < threshold)
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
    }
}
