namespace QuantTasks.Coding;

/// <summary>
/// Optimal length-limited prefix code lengths by the package-merge algorithm (Larmore and Hirschberg): the
/// lengths that minimise the coded size of a histogram when no code may be longer than a limit. The limit keeps
/// the decoder's lookup table small (2^12 entries) at a cost that is negligible for weight histograms.
/// </summary>
internal static class HuffmanLengths
{
    /// <summary>
    /// Code lengths for each symbol of <paramref name="histogram"/> (0 for symbols that never occur). A single
    /// occurring symbol gets length 1; it is then coded in zero bits.
    /// </summary>
    public static byte[] Build(ReadOnlySpan<long> histogram, int maxLength)
    {
        var weights = histogram.ToArray();
        var lengths = new byte[histogram.Length];
        var used = new List<int>();
        for (var s = 0; s < histogram.Length; s++)
        {
            if (histogram[s] > 0)
            {
                used.Add(s);
            }
        }

        if (used.Count == 0)
        {
            return lengths;
        }

        if (used.Count <= 2)
        {
            foreach (var s in used)
            {
                lengths[s] = 1;
            }

            return lengths;
        }

        if (used.Count > 1 << maxLength)
        {
            throw new ArgumentException($"{used.Count} symbols do not fit codes of at most {maxLength} bits.", nameof(maxLength));
        }

        // Leaves in increasing weight, ties by symbol, so that equal inputs always give equal codes.
        var leaves = used
            .OrderBy(s => weights[s])
            .ThenBy(s => s)
            .Select(s => new Item(weights[s], s, null, null))
            .ToArray();

        var current = leaves;
        for (var level = 1; level < maxLength; level++)
        {
            var packages = new Item[current.Length / 2];
            for (var i = 0; i < packages.Length; i++)
            {
                var left = current[2 * i];
                var right = current[(2 * i) + 1];
                packages[i] = new Item(left.Weight + right.Weight, -1, left, right);
            }

            current = Merge(leaves, packages);
        }

        // A symbol's code length is the number of selected items that contain it.
        var count = new int[histogram.Length];
        var stack = new Stack<Item>();
        for (var i = 0; i < (2 * used.Count) - 2; i++)
        {
            stack.Push(current[i]);
            while (stack.Count > 0)
            {
                var item = stack.Pop();
                if (item.Symbol >= 0)
                {
                    count[item.Symbol]++;
                }
                else
                {
                    stack.Push(item.Left!);
                    stack.Push(item.Right!);
                }
            }
        }

        for (var s = 0; s < histogram.Length; s++)
        {
            lengths[s] = (byte)count[s];
        }

        return lengths;
    }

    /// <summary>Bits a histogram takes when coded with <paramref name="lengths"/>; zero for a single occurring symbol.</summary>
    public static long CodedBits(ReadOnlySpan<long> histogram, ReadOnlySpan<byte> lengths)
    {
        var occurring = 0;
        long bits = 0;
        for (var s = 0; s < histogram.Length; s++)
        {
            if (histogram[s] > 0)
            {
                occurring++;
                bits += histogram[s] * lengths[s];
            }
        }

        return occurring <= 1 ? 0 : bits;
    }

    // Merge two weight-sorted lists; on equal weights the leaf comes first.
    private static Item[] Merge(Item[] leaves, Item[] packages)
    {
        var merged = new Item[leaves.Length + packages.Length];
        int i = 0, j = 0, k = 0;
        while (i < leaves.Length || j < packages.Length)
        {
            merged[k++] = j >= packages.Length || (i < leaves.Length && leaves[i].Weight <= packages[j].Weight)
                ? leaves[i++]
                : packages[j++];
        }

        return merged;
    }

    private sealed record Item(long Weight, int Symbol, Item? Left, Item? Right);
}
