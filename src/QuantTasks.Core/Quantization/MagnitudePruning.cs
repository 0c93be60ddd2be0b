namespace QuantTasks.Quantization;

/// <summary>
/// Magnitude pruning (Deep Compression's first stage, here without retraining): the given fraction of the
/// smallest weights by absolute value become exactly zero. Ties at the threshold go in element order, so the
/// mask depends on the values alone.
/// </summary>
internal static class MagnitudePruning
{
    /// <summary>Each tensor loses floor(sparsity x n) of its own smallest weights.</summary>
    public static bool[] PerTensor(ReadOnlySpan<float> values, double sparsity)
    {
        CheckSparsity(sparsity);
        var count = (long)Math.Floor(sparsity * values.Length);
        var magnitudes = new float[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            magnitudes[i] = Math.Abs(values[i]);
        }

        return Masks([magnitudes], count)[0];
    }

    /// <summary>One threshold over all tensors: floor(sparsity x total) of the smallest weights overall.</summary>
    public static bool[][] Global(IReadOnlyList<float[]> tensors, double sparsity)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        CheckSparsity(sparsity);
        var total = tensors.Sum(t => (long)t.Length);
        var magnitudes = tensors.Select(t => t.Select(Math.Abs).ToArray()).ToArray();
        return Masks(magnitudes, (long)Math.Floor(sparsity * total));
    }

    private static bool[][] Masks(float[][] magnitudes, long count)
    {
        var masks = magnitudes.Select(m => new bool[m.Length]).ToArray();
        if (count == 0)
        {
            return masks;
        }

        var all = magnitudes.SelectMany(m => m).ToArray();
        Array.Sort(all);
        var threshold = all[count - 1];

        // Everything strictly below the threshold goes; then as many at the threshold as are still due, in order.
        var remaining = count;
        for (var t = 0; t < magnitudes.Length; t++)
        {
            for (var i = 0; i < magnitudes[t].Length; i++)
            {
                if (magnitudes[t][i] < threshold)
                {
                    masks[t][i] = true;
                    remaining--;
                }
            }
        }

        for (var t = 0; t < magnitudes.Length && remaining > 0; t++)
        {
            for (var i = 0; i < magnitudes[t].Length && remaining > 0; i++)
            {
                if (magnitudes[t][i] == threshold)
                {
                    masks[t][i] = true;
                    remaining--;
                }
            }
        }

        return masks;
    }

    private static void CheckSparsity(double sparsity)
    {
        if (sparsity is < 0 or >= 1 || double.IsNaN(sparsity))
        {
            throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, "Sparsity must be in [0, 1).");
        }
    }
}
