using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Evaluation;
using QuantTasks.Randomness;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Training;

/// <summary>
/// The training file as batches: a seeded split into training and held-out rows, a seeded shuffle per epoch, and
/// each batch's inputs (and labels) copied into tensors on the device.
/// </summary>
internal sealed class TrainingData
{
    private readonly (string Input, NpyArray Array, int PerSample)[] _arrays;
    private readonly long[]? _labels;
    private readonly Device _device;

    public TrainingData(TorchGraph graph, DataFile data, double validation, long seed, Device device)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(data);
        _device = device;
        _arrays = graph.InputNames.Select(name =>
        {
            var array = ModelEvaluator.InputArray(data, name, graph.InputNames.Count);
            return (name, array, (int)(array.Length / array.Rows));
        }).ToArray();
        var rows = (int)_arrays.Min(a => a.Array.Rows);
        _labels = data.Labels();
        if (_labels is not null && _labels.Length < rows)
        {
            throw new QuantException(ErrorCode.DataMissingArray, $"'{data.Path}' has {_labels.Length} labels for {rows} samples.", new SourceLocation(data.Path));
        }

        // A seeded permutation: its first part is held out, the rest trains. Both are kept in file order so that
        // the held-out pass reads the same batches every epoch.
        var order = Permutation(rows, new SplitMix64(seed, 0x5EED));
        var held = (int)Math.Round(rows * validation);
        if (rows - held < 1)
        {
            throw new QuantException(ErrorCode.DataMissingArray,
                $"'{data.Path}' has {rows} samples, too few to hold {validation:0.##} of them out and train on the rest.", new SourceLocation(data.Path));
        }

        HeldOut = order.Take(held).Order().ToArray();
        Training = order.Skip(held).Order().ToArray();
    }

    /// <summary>Rows the optimizer sees.</summary>
    public int[] Training { get; }

    /// <summary>Rows held out for early stopping and the curve.</summary>
    public int[] HeldOut { get; }

    /// <summary>Whether the file has labels.</summary>
    public bool HasLabels => _labels is not null;

    /// <summary>The training rows in the order of one epoch: a seeded shuffle, different every epoch.</summary>
    public int[] Shuffled(long seed, int epoch)
    {
        var permutation = Permutation(Training.Length, new SplitMix64(seed, 0xE90C + epoch));
        return permutation.Select(i => Training[i]).ToArray();
    }

    /// <summary>The rows in batches of at most <paramref name="size"/>.</summary>
    public static IEnumerable<int[]> Batches(int[] rows, int size)
    {
        for (var start = 0; start < rows.Length; start += size)
        {
            yield return rows[start..Math.Min(rows.Length, start + size)];
        }
    }

    /// <summary>The inputs of the given rows, as tensors on the device.</summary>
    public Dictionary<string, Tensor> Inputs(int[] rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var inputs = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (input, array, perSample) in _arrays)
        {
            var buffer = new float[rows.Length * perSample];
            for (var r = 0; r < rows.Length; r++)
            {
                Array.Copy(array.Floats!, (long)rows[r] * perSample, buffer, (long)r * perSample, perSample);
            }

            var shape = array.Shape.ToArray();
            shape[0] = rows.Length;
            inputs[input] = tensor(buffer, shape).to(_device);
        }

        return inputs;
    }

    /// <summary>The labels of the given rows, or null without labels.</summary>
    public Tensor? Labels(int[] rows) =>
        _labels is null ? null : tensor(rows.Select(r => _labels[r]).ToArray(), ScalarType.Int64).to(_device);

    private static int[] Permutation(int count, SplitMix64 random)
    {
        var order = Enumerable.Range(0, count).ToArray();
        for (var i = count - 1; i > 0; i--)
        {
            var j = (int)(random.Next() % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }

        return order;
    }
}
