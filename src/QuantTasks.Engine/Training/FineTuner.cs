using System.Diagnostics;
using System.Globalization;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Policy;
using QuantTasks.Reporting;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Training;

/// <summary>
/// The training loop of fine-tuning: epochs of seeded mini-batches through the graph with every trainable tensor
/// rebuilt from its shared values, an optimizer step per batch, a held-out pass per epoch for early stopping and
/// the curve, and at the end the values of the best held-out epoch (the quantized model itself, epoch 0, when
/// no epoch improved on it: fine-tuning never hands on a worse model than it was given).
/// </summary>
internal sealed class FineTuner
{
    private readonly TorchGraph _graph;
    private readonly TrainingObjective _objective;
    private readonly TrainingData _data;
    private readonly FinetuneOptions _options;
    private readonly TeacherScores? _teacher;

    public FineTuner(TorchGraph graph, TrainingObjective objective, TrainingData data, FinetuneOptions options)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(objective);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        _graph = graph;
        _objective = objective;
        _data = data;
        _options = options;
        _teacher = objective.NeedsTeacher ? new TeacherScores(graph, data, objective.Scores, options.BatchSize) : null;
    }

    /// <summary>Trains the tensors; <paramref name="stages"/> lists the tensors each unfreezing stage adds (one stage: all at once).</summary>
    /// <param name="tensors">Every tensor that replaces an initializer in the forward pass.</param>
    /// <param name="stages">Per stage, the tensors it adds to those that train; each tensor in exactly one stage.</param>
    /// <param name="progress">0 to 1 over all steps.</param>
    /// <param name="note">One line per epoch, with the losses.</param>
    /// <param name="cancellation">Checked between steps.</param>
    /// <param name="phase">The phase's name in the curve (shared, qat).</param>
    /// <param name="firstEpoch">The number of the epoch before this phase's first (the curve continues an earlier phase).</param>
    public TrainingReport Run(IReadOnlyList<TrainableTensor> tensors, IReadOnlyList<IReadOnlyList<TrainableTensor>> stages,
        IProgress<double>? progress, Action<string>? note, CancellationToken cancellation, string phase = "shared", int firstEpoch = 0)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(stages);
        var clock = Stopwatch.StartNew();
        var epochsPerStage = SplitEpochs(_options.Epochs, stages.Count);
        var batchesPerEpoch = (_data.Training.Length + _options.BatchSize - 1) / _options.BatchSize;
        var totalSteps = (double)epochsPerStage.Sum() * batchesPerEpoch;
        var steps = 0;

        var curve = new List<EpochReport>();
        var (bestLoss, accuracy) = HeldOut(tensors);
        curve.Add(new EpochReport(firstEpoch, phase, 0, 0, null, bestLoss, accuracy));
        var best = tensors.Select(t => t.Snapshot()).ToArray();
        var bestEpoch = firstEpoch;
        var stoppedEarly = false;
        var epoch = firstEpoch;
        var training = new List<TrainableTensor>();
        for (var stage = 0; stage < stages.Count; stage++)
        {
            training.AddRange(stages[stage]);
            using var optimizer = ParameterOptimizer.For(_options, training.SelectMany(t => t.Parameters).ToArray());
            var sinceBest = 0;
            for (var e = 0; e < epochsPerStage[stage]; e++)
            {
                epoch++;
                var rate = LearningRate(e, epochsPerStage[stage]);
                optimizer.LearningRate = rate;

                double lossSum = 0;
                foreach (var rows in TrainingData.Batches(_data.Shuffled(_options.Seed, epoch), _options.BatchSize))
                {
                    cancellation.ThrowIfCancellationRequested();
                    using (NewDisposeScope())
                    {
                        // A finite loss with a NaN gradient is libtorch's transient NaN (see TransientNaN): the
                        // step is computed again rather than let one bad pass poison Adam's moments.
                        var loss = TransientNaN.Retry(
                            () =>
                            {
                                optimizer.ZeroGradients();
                                var l = _objective.Compute(Student(tensors, rows), _teacher?.Get(rows), _data.Labels(rows));
                                l.backward();
                                return l;
                            },
                            l => !TransientNaN.AllFinite([l]) || optimizer.GradientsFinite());
                        optimizer.Step();
                        lossSum += loss.item<float>() * rows.Length;
                    }

                    foreach (var t in training)
                    {
                        t.AfterStep();
                    }

                    progress?.Report(++steps / totalSteps);
                }

                var trainingLoss = lossSum / _data.Training.Length;
                var (heldOutLoss, heldOutAccuracy) = HeldOut(tensors);
                curve.Add(new EpochReport(epoch, phase, stage + 1, rate, trainingLoss, heldOutLoss, heldOutAccuracy));
                note?.Invoke(string.Create(CultureInfo.InvariantCulture, $"finetune {phase} epoch {epoch - firstEpoch}/{_options.Epochs}: loss {trainingLoss:0.0000}")
                    + (heldOutLoss is { } h ? string.Create(CultureInfo.InvariantCulture, $", held-out loss {h:0.0000}") : "")
                    + (heldOutAccuracy is { } a ? string.Create(CultureInfo.InvariantCulture, $", held-out {_objective.Metric(_data.HasLabels)} {a:0.00}%") : ""));

                if (!double.IsFinite(trainingLoss))
                {
                    // Diverged: the best values so far are restored below; a smaller learning rate is the cure.
                    note?.Invoke($"finetune: the loss is not finite at epoch {epoch}; keeping epoch {bestEpoch}. Lower finetune.learning_rate.");
                    stoppedEarly = true;
                    steps += (epochsPerStage[stage] - e - 1) * batchesPerEpoch;
                    break;
                }

                // Without held-out samples the last epoch is the one kept.
                if (heldOutLoss is null || heldOutLoss < bestLoss)
                {
                    bestLoss = heldOutLoss;
                    best = tensors.Select(t => t.Snapshot()).ToArray();
                    bestEpoch = epoch;
                    sinceBest = 0;
                }
                else if (_options.Patience > 0 && ++sinceBest >= _options.Patience)
                {
                    stoppedEarly = e < epochsPerStage[stage] - 1;
                    steps += (epochsPerStage[stage] - e - 1) * batchesPerEpoch;
                    break;
                }
            }

            // The next stage starts from the best values so far.
            for (var t = 0; t < tensors.Count; t++)
            {
                tensors[t].Restore(best[t]);
            }
        }

        return new TrainingReport(
            System.Text.Json.JsonNamingPolicy.KebabCaseLower.ConvertName(_objective.Loss.ToString()),
            _objective.Metric(_data.HasLabels),
            _data.Training.Length,
            _data.HeldOut.Length,
            bestEpoch,
            stoppedEarly,
            Math.Round(clock.Elapsed.TotalSeconds, 3),
            tensors.Sum(t => t.Parameters.Sum(p => p.numel())),
            curve);
    }

    /// <summary>The epochs of each stage: as even as possible, the first stages taking the remainder.</summary>
    internal static int[] SplitEpochs(int epochs, int stages)
    {
        var result = new int[stages];
        for (var s = 0; s < stages; s++)
        {
            result[s] = (epochs / stages) + (s < epochs % stages ? 1 : 0);
        }

        return result;
    }

    /// <summary>The learning rate of epoch <paramref name="e"/> (from 0) of <paramref name="count"/>.</summary>
    internal double LearningRate(int e, int count) => _options.Schedule switch
    {
        LearningRateSchedule.Constant => _options.LearningRate,
        LearningRateSchedule.Step => _options.LearningRate * (e >= count * 3 / 4.0 ? 0.01 : e >= count / 2.0 ? 0.1 : 1),
        // Half a cosine sampled at the start of each epoch, so the first epoch runs at the full rate.
        _ => _options.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * e / count)),
    };

    private Tensor Student(IReadOnlyList<TrainableTensor> tensors, int[] rows)
    {
        var weights = tensors.ToDictionary(t => t.Name, t => t.Weight(), StringComparer.Ordinal);
        return _graph.Forward(_data.Inputs(rows), [_objective.Scores], weights)[0];
    }

    /// <summary>Mean loss and accuracy on the held-out rows; nulls without them.</summary>
    private (double? Loss, double? Accuracy) HeldOut(IReadOnlyList<TrainableTensor> tensors)
    {
        if (_data.HeldOut.Length == 0)
        {
            return (null, null);
        }

        using var _ = no_grad();
        double loss = 0;
        long correct = 0, total = 0;
        foreach (var rows in TrainingData.Batches(_data.HeldOut, _options.BatchSize))
        {
            using var scope = NewDisposeScope();
            var student = Student(tensors, rows);
            var teacher = _teacher?.Get(rows) ?? (_objective.Metric(_data.HasLabels) == "agreement" ? Teacher(rows) : null);
            var labels = _data.Labels(rows);
            loss += _objective.Compute(student, teacher, labels).item<float>() * rows.Length;
            var (c, n) = _objective.Agreement(student, teacher, labels);
            correct += c;
            total += n;
        }

        return (loss / _data.HeldOut.Length, total == 0 ? null : 100.0 * correct / total);
    }

    private Tensor Teacher(int[] rows) => _graph.Forward(_data.Inputs(rows), [_objective.Scores])[0].detach();
}

/// <summary>
/// The float model's scores per training row, computed once (one forward pass over the file) when they fit in
/// <see cref="MaxResidentFloats"/>, otherwise again for each batch.
/// </summary>
internal sealed class TeacherScores
{
    /// <summary>Scores kept in memory at most (256 MB of float32).</summary>
    public const long MaxResidentFloats = 64L << 20;

    private readonly TorchGraph _graph;
    private readonly TrainingData _data;
    private readonly string _scores;
    private readonly float[]? _resident;
    private readonly long[] _shape = [];
    private readonly long _perRow;

    public TeacherScores(TorchGraph graph, TrainingData data, string scores, int batchSize)
    {
        _graph = graph;
        _data = data;
        _scores = scores;
        using var _ = no_grad();
        var rows = data.Training.Concat(data.HeldOut).Order().ToArray();
        var count = rows.Length == 0 ? 0 : rows.Max() + 1;
        using (NewDisposeScope())
        {
            var first = Compute(rows[..Math.Min(rows.Length, 1)]);
            _shape = first.shape;
            _perRow = first.numel();
        }

        if (_perRow * count > MaxResidentFloats)
        {
            return;
        }

        _resident = new float[_perRow * count];
        foreach (var batch in TrainingData.Batches(rows, batchSize))
        {
            using var scope = NewDisposeScope();
            var values = Compute(batch).contiguous().cpu().data<float>().ToArray();
            for (var r = 0; r < batch.Length; r++)
            {
                Array.Copy(values, r * _perRow, _resident, batch[r] * _perRow, _perRow);
            }
        }
    }

    /// <summary>The scores of the given rows, detached, on the graph's device.</summary>
    public Tensor Get(int[] rows)
    {
        if (_resident is null)
        {
            using var _ = no_grad();
            return Compute(rows);
        }

        var buffer = new float[rows.Length * _perRow];
        for (var r = 0; r < rows.Length; r++)
        {
            Array.Copy(_resident, rows[r] * _perRow, buffer, r * _perRow, _perRow);
        }

        var shape = _shape.ToArray();
        shape[0] = rows.Length;
        return tensor(buffer, shape).to(_graph.Parameters[0].device);
    }

    private Tensor Compute(int[] rows) => _graph.Forward(_data.Inputs(rows), [_scores])[0].detach();
}
