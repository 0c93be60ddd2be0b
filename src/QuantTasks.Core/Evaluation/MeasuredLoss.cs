using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using QuantTasks.Diagnostics;
using QuantTasks.Data;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;

namespace QuantTasks.Evaluation;

/// <summary>How a measured output is compared with the float model's.</summary>
internal enum OutputComparison
{
    /// <summary>Class logits (or log-probabilities) along an axis: softmax per position, then KL or cross-entropy.</summary>
    Logits,

    /// <summary>Class probabilities along an axis (a Softmax output): KL per position as they are.</summary>
    Probabilities,

    /// <summary>Independent probabilities per element (a Sigmoid map): binary KL per element.</summary>
    BinaryProbabilities,

    /// <summary>Values (regression, embeddings): mean squared error.</summary>
    Values,
}

/// <summary>How <see cref="MeasuredLoss"/> compares the output.</summary>
/// <param name="Comparison">The comparison.</param>
/// <param name="Axis">The class axis of the whole output (batch included; negative from the end), for the categorical comparisons.</param>
/// <param name="Temperature">
/// For <see cref="OutputComparison.Probabilities"/> without labels: the distributions compared are softmax(logits / T),
/// taken from the probabilities as p^(1/T) normalised; 1 compares them as they are.
/// </param>
internal sealed record OutputLoss(OutputComparison Comparison, long Axis = -1, double Temperature = 1)
{
    /// <summary>Class logits along the last axis: samples x classes, as classifiers end.</summary>
    public static OutputLoss ClassLogits { get; } = new(OutputComparison.Logits);
}

/// <summary>
/// The loss increase when one weight tensor alone is replaced by its quantized values, measured by ONNX Runtime
/// on the calibration samples: mean cross-entropy against the labels, or without labels the divergence from the
/// float model's output that fits it (<see cref="OutputLoss"/>: KL of class distributions per position, binary KL
/// of a probability map, squared error of values). It is what the second-order Omega approximates, at the price of one forward
/// pass over the samples per candidate, and it carries no estimator noise.
/// </summary>
/// <remarks>
/// One ONNX Runtime session serves every candidate: the measured tensors are made overridable initializers (also
/// graph inputs, their stored values the defaults), and a candidate's values are fed as an input. Building a session
/// per candidate, as before, cost more than running it. Threads share the session (ONNX Runtime's Run is
/// thread-safe), so the search measures several tensors' candidates at once. A float weight held in a Constant
/// node is moved into an initializer first; only weights stored in another type get a session per candidate.
/// </remarks>
internal sealed class MeasuredLoss : ILossMeasurement, IDisposable
{
    private readonly OutputLoss _form;
    private readonly ModelProto _model;
    private readonly DataFile _data;
    private readonly string? _output;
    private readonly string _outputName;
    private readonly string _modelPath;
    private readonly long[]? _labels;
    private readonly double[][] _floatProbabilities;
    private readonly ModelOutputs _reference;
    private readonly double _floatLoss;
    private readonly SessionOptions _options;
    private readonly InferenceSession _session;
    private readonly Dictionary<string, long[]> _overridable;

    // The model as the shared session runs it (weights overridable, constants promoted), built again for the first
    // probe rather than held by every measurement (a large model's copy): each weight's part of the graph is cut
    // from it, and the frontier values are computed by a copy of it with them as outputs.
    private ModelProto? _shared;
    private readonly int _dataInputs;
    private readonly Lock _prefixLock = new();
    private Dictionary<string, AffectedGraph?>? _parts;
    private InferenceSession? _prefix;
    private bool _prefixRefused;

    // Runs at once: one per core. Callers measure from parallel loops whose blocked threads make the thread pool
    // add more, and every run in flight holds a batch's activations in ONNX Runtime's arena (the recognizer of
    // PP-OCR peaked at 6.4 GB with no cap, 1.3 GB without measurements).
    private readonly SemaphoreSlim _runs = new(Environment.ProcessorCount);
    private int _inFlight;
    private int _peakRuns;
    private long _candidates;
    private long _elapsedTicks;

    /// <summary>Opens the shared session and runs the float model once, for the reference loss.</summary>
    /// <param name="model">The model.</param>
    /// <param name="data">The calibration samples.</param>
    /// <param name="output">The output compared, or null for the first.</param>
    /// <param name="weights">The tensors whose candidates will be measured (the others keep their values).</param>
    /// <param name="form">How the output is compared; null: class logits along its last axis.</param>
    /// <param name="labels">
    /// Whether labels, when the samples have them, make the loss cross-entropy against them; false: always the
    /// divergence from the float model's outputs, which a small change can only raise.
    /// </param>
    public MeasuredLoss(OnnxModel model, DataFile data, string? output, IEnumerable<string> weights, OutputLoss? form = null, bool labels = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(weights);
        _form = form ?? OutputLoss.ClassLogits;
        // The model's tensors are shared, not copied (external data is already inline in memory); every variant
        // below is a shallow copy with its own lists, so a large model is held once.
        _model = OnnxModel.ShallowCopy(model.Proto);
        _data = data;
        _output = output;
        _modelPath = model.Path;
        _labels = labels ? data.Labels() : null;

        _overridable = new Dictionary<string, long[]>(StringComparer.Ordinal);
        var shared = Shared(_model, weights, _overridable);
        // One thread per Run, without spinning: the search runs several tensors' candidates at once, and ONNX
        // Runtime's own pool spinning beside them would fight them for the cores.
        _options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = 1 };
        _options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        _session = ModelEvaluator.OpenSession(shared.ToByteArray(), _options, model.Path);
        _outputName = output ?? _session.OutputNames[0];
        _dataInputs = _session.InputNames.Count;
        _reference = ModelEvaluator.Run(_session, data, _outputName, model.Path, []);
        if (_labels is not null)
        {
            InputChecks.RequireLabelsInRange(data, _reference.Classes);
        }
        _floatProbabilities = _form.Comparison == OutputComparison.Logits && (_reference.SampleShape?.Length ?? 1) == 1 ? Softmax(_reference) : [];
        _floatLoss = Loss(_reference);
    }

    /// <summary>Calibration samples each candidate runs on.</summary>
    public int Samples => _reference.Samples;

    /// <summary>The most runs that were in flight at once.</summary>
    internal int PeakRuns => Volatile.Read(ref _peakRuns);

    /// <summary>Candidates measured so far, and the seconds they took (summed over threads).</summary>
    public (long Candidates, double Seconds) Throughput => (Interlocked.Read(ref _candidates), TimeSpan.FromTicks(Interlocked.Read(ref _elapsedTicks)).TotalSeconds);

    /// <summary>The loss with tensor <paramref name="name"/> replaced by <paramref name="values"/>, minus the float model's.</summary>
    public double Increase(string name, float[] values) => Increase([(name, values)]);

    /// <summary>The samples' labels, or null.</summary>
    public long[]? Labels => _labels;

    /// <summary>The float model's outputs on the samples.</summary>
    public ModelOutputs Reference => _reference;

    /// <summary>The loss with every listed tensor replaced by its values at once (the others float), minus the float model's.</summary>
    public double Increase(IReadOnlyList<(string Name, float[] Values)> replaced)
    {
        ArgumentNullException.ThrowIfNull(replaced);
        return Gated(() => RunLoss(replaced), candidate: true) - _floatLoss;
    }

    /// <summary>The loss of <paramref name="outputs"/> (from <see cref="Outputs"/>) minus the float model's.</summary>
    public double Increase(ModelOutputs outputs) => Loss(outputs) - _floatLoss;

    /// <summary>The outputs with every listed tensor replaced by its values at once (the others float).</summary>
    public ModelOutputs Outputs(IReadOnlyList<(string Name, float[] Values)> replaced)
    {
        ArgumentNullException.ThrowIfNull(replaced);
        return Gated(() => Run(replaced), candidate: true);
    }

    // Every run of a session passes here: at most one per core in flight (the peak kept for tests), and a
    // candidate's run counted with its time for the throughput.
    private T Gated<T>(Func<T> run, bool candidate)
    {
        _runs.Wait();
        var inFlight = Interlocked.Increment(ref _inFlight);
        try
        {
            for (var peak = Volatile.Read(ref _peakRuns); inFlight > peak && Interlocked.CompareExchange(ref _peakRuns, inFlight, peak) != peak; peak = Volatile.Read(ref _peakRuns))
            {
            }

            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = run();
            if (candidate)
            {
                Interlocked.Increment(ref _candidates);
                Interlocked.Add(ref _elapsedTicks, clock.Elapsed.Ticks);
            }

            return result;
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
            _runs.Release();
        }
    }

    private ModelOutputs Run(IReadOnlyList<(string Name, float[] Values)> replaced)
    {
        if (!replaced.All(r => _overridable.ContainsKey(r.Name)))
        {
            return ModelEvaluator.Run(Rebuilt(replaced), _data, _output, _modelPath);
        }

        var inputs = Fed(replaced);
        try
        {
            return ModelEvaluator.Run(_session, _data, _outputName, _modelPath, inputs);
        }
        finally
        {
            Release(inputs);
        }
    }

    // The loss of a run, summed batch by batch as ONNX Runtime hands the outputs over: no run keeps its whole
    // output (the search only needs the figure).
    private double RunLoss(IReadOnlyList<(string Name, float[] Values)> replaced)
    {
        if (!replaced.All(r => _overridable.ContainsKey(r.Name)))
        {
            return Loss(Run(replaced));
        }

        var inputs = Fed(replaced);
        try
        {
            var loss = new LossSum(this);
            ModelEvaluator.Each(_session, _data, _outputName, _modelPath, inputs, _session.InputNames, _dataInputs, samples: null, batchSize: null, perBatch: null, loss.Add);
            return loss.Mean;
        }
        finally
        {
            Release(inputs);
        }
    }

    // The caller's arrays are pinned, not copied: ONNX Runtime only reads its inputs, and runs in parallel may pin
    // the same array (the joint check feeds every tensor's values to each of its runs: the recognizer's 10.7 MB).
    private (string Name, OrtValue Value)[] Fed(IReadOnlyList<(string Name, float[] Values)> replaced) =>
        replaced.Select(r => (r.Name, Value: OrtValue.CreateTensorValueFromMemory(r.Values, _overridable[r.Name]))).ToArray();

    private static void Release((string Name, OrtValue Value)[] inputs)
    {
        foreach (var (_, value) in inputs)
        {
            value.Dispose();
        }
    }

    // A weight the shared session cannot take as an input (stored in another type): a model with its values.
    private byte[] Rebuilt(IReadOnlyList<(string Name, float[] Values)> replaced)
    {
        var proto = OnnxModel.ShallowCopy(_model);
        foreach (var (name, values) in replaced)
        {
            if (!OnnxModel.ReplaceFloatValues(proto.Graph, name, values))
            {
                throw new ArgumentException($"No float32 tensor '{name}' in the model.", nameof(replaced));
            }
        }

        return proto.ToByteArray();
    }

    /// <summary>
    /// A probe for <paramref name="runs"/> candidates of tensor <paramref name="name"/>, one after another. When the
    /// part of the graph the tensor reaches leaves out enough of it (<see cref="AffectedGraph"/>), the values the part
    /// reads from the rest are computed once, on every sample, and each candidate runs the part alone; otherwise, or
    /// when those values would take more than <see cref="MaxFrontierBytes"/>, each runs the whole graph. Either way
    /// the increase is the same loss, within the rounding of a differently fused graph.
    /// </summary>
    public ICandidateProbe Probe(string name, int runs)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_overridable.ContainsKey(name) || PartOf(name) is not { } part
            || (double)(part.GraphNodes - part.Nodes.Count) / part.GraphNodes * runs < 2 + ((double)part.Nodes.Count / part.GraphNodes))
        {
            return new CandidateProbe(this, name, null);
        }

        if (Prefix() is not { } prefix)
        {
            return new CandidateProbe(this, name, null);
        }

        var types = part.Frontier.ToDictionary(f => f, f => TypeOf(prefix.OutputMetadata[f]), StringComparer.Ordinal);
        if (types.Values.Any(t => t is null))
        {
            return new CandidateProbe(this, name, null);
        }

        // The frontier on every sample, batch by batch, as the part's inputs: held until the probe is disposed. The
        // first batch past the byte limit stops the pass.
        var batches = new List<(string Name, OrtValue Value)[]>();
        long bytes = 0;
        using var tooLarge = new CancellationTokenSource();
        var batchSize = 0;
        try
        {
            batchSize = Gated(() => ModelEvaluator.Batches(prefix, _data, part.Frontier, _modelPath, (_, _, results) =>
            {
                var kept = part.Frontier.Zip(results).Select(p => (p.First, Value: Keep(p.Second))).ToArray();
                batches.Add(kept.Select(k => (k.First, k.Value.Value)).ToArray());
                bytes += kept.Sum(k => k.Value.Bytes);
                if (bytes > MaxFrontierBytes)
                {
                    tooLarge.Cancel();
                }
            }, tooLarge.Token), candidate: false);
        }
        catch (OperationCanceledException) when (tooLarge.IsCancellationRequested)
        {
        }

        var run = new PartRun(part, batches, batchSize);
        if (tooLarge.IsCancellationRequested)
        {
            run.Dispose();
            return new CandidateProbe(this, name, null);
        }

        try
        {
            try
            {
                run.Session = ModelEvaluator.OpenSession(part.Build(_shared!, types!).ToByteArray(), _options, _modelPath);
            }
            catch (QuantException)
            {
                // ONNX Runtime would not take the part on its own (an operator that needs a type or shape the cut
                // left out): the whole graph measures the same loss.
                run.Dispose();
                return new CandidateProbe(this, name, null);
            }

            var original = TensorValues.ReadAsFloat(_shared!.Graph.Initializer.First(t => t.Name == name));
            run.Baseline = RunPart(run, original, candidate: false);
            return new CandidateProbe(this, name, run);
        }
        catch
        {
            run.Dispose();
            throw;
        }
    }

    /// <summary>Most bytes of frontier values one probe holds (the values a part reads, on every sample): 256 MB.</summary>
    internal long MaxFrontierBytes { get; init; } = 256L << 20;

    /// <summary>The loss increase of one candidate measured on its tensor's part of the graph.</summary>
    internal double Increase(PartRun run, float[] values) => RunPart(run, values, candidate: true) - run.Baseline;

    // The part's loss with the weight's values, summed batch by batch.
    private double RunPart(PartRun run, float[] values, bool candidate) => Gated(() =>
    {
        using var weight = OrtValue.CreateTensorValueFromMemory(values, _overridable[run.Part.Weight]);
        var loss = new LossSum(this);
        ModelEvaluator.Each(run.Session!, _data, _outputName, _modelPath, [(run.Part.Weight, weight)], run.Part.DataInputs, _dataInputs,
            _reference.Samples, run.BatchSize, b => run.Batches[b], loss.Add);
        return loss.Mean;
    }, candidate);

    private AffectedGraph? PartOf(string name)
    {
        lock (_prefixLock)
        {
            _shared ??= Shared(_model, _overridable.Keys, new Dictionary<string, long[]>(StringComparer.Ordinal));
            _parts ??= _overridable.Keys.ToDictionary(w => w, w => AffectedGraph.Find(_shared.Graph, w, _outputName), StringComparer.Ordinal);
            return _parts[name];
        }
    }

    /// <summary>
    /// A copy of <paramref name="model"/> whose float32 <paramref name="weights"/> are overridable initializers (graph
    /// inputs with their stored values as defaults; those held in Constant nodes moved into initializers first), and
    /// each one's shape in <paramref name="overridable"/>. A weight stored in another type is left as it is.
    /// </summary>
    private static ModelProto Shared(ModelProto model, IEnumerable<string> weights, Dictionary<string, long[]> overridable)
    {
        var shared = OnnxModel.ShallowCopy(model);
        var inputs = shared.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in weights)
        {
            var initializer = shared.Graph.Initializer.FirstOrDefault(i => i.Name == name) ?? PromoteConstant(shared.Graph, name);
            if (initializer is null || initializer.DataType != (int)TensorProto.Types.DataType.Float)
            {
                continue; // stored in another type (float16, say): measured the slow way
            }

            overridable[name] = initializer.Dims.ToArray();
            if (inputs.Add(name))
            {
                var type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = initializer.DataType, Shape = new TensorShapeProto() } };
                type.TensorType.Shape.Dim.AddRange(initializer.Dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
                shared.Graph.Input.Add(new ValueInfoProto { Name = name, Type = type });
            }
        }

        shared.IrVersion = Math.Max(shared.IrVersion, 4); // overridable initializers: IR 4 and later
        return shared;
    }

    // The model with every part's frontier as extra outputs (untyped: ONNX Runtime infers them), opened once; null
    // when ONNX Runtime refuses it, and every probe then runs the whole graph.
    private InferenceSession? Prefix()
    {
        lock (_prefixLock)
        {
            if (_prefix is null && !_prefixRefused)
            {
                var proto = OnnxModel.ShallowCopy(_shared!);
                var outputs = proto.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
                foreach (var value in _parts!.Values.OfType<AffectedGraph>().SelectMany(p => p.Frontier).Distinct(StringComparer.Ordinal).Where(outputs.Add))
                {
                    proto.Graph.Output.Add(new ValueInfoProto { Name = value });
                }

                try
                {
                    _prefix = ModelEvaluator.OpenSession(proto.ToByteArray(), _options, _modelPath);
                }
                catch (QuantException)
                {
                    _prefixRefused = true;
                }
            }

            return _prefix;
        }
    }

    private static TypeProto? TypeOf(NodeMetadata metadata) =>
        metadata.IsTensor && metadata.ElementDataType is TensorElementType.Float or TensorElementType.Double or TensorElementType.Int64
            or TensorElementType.Int32 or TensorElementType.Bool or TensorElementType.UInt8 or TensorElementType.Int8
            ? new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)metadata.ElementDataType } }
            : null;

    // A copy of a result in managed memory, as an input value that stays valid after the result is disposed.
    private static (OrtValue Value, long Bytes) Keep(OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        var shape = info.Shape;
        return info.ElementDataType switch
        {
            TensorElementType.Float => Kept(value.GetTensorDataAsSpan<float>().ToArray(), shape),
            TensorElementType.Double => Kept(value.GetTensorDataAsSpan<double>().ToArray(), shape),
            TensorElementType.Int64 => Kept(value.GetTensorDataAsSpan<long>().ToArray(), shape),
            TensorElementType.Int32 => Kept(value.GetTensorDataAsSpan<int>().ToArray(), shape),
            TensorElementType.Bool => Kept(value.GetTensorDataAsSpan<bool>().ToArray(), shape),
            TensorElementType.UInt8 => Kept(value.GetTensorDataAsSpan<byte>().ToArray(), shape),
            TensorElementType.Int8 => Kept(value.GetTensorDataAsSpan<sbyte>().ToArray(), shape),
            var other => throw new InvalidOperationException($"Frontier value of type {other} was not typed as a part input."),
        };
    }

    private static unsafe (OrtValue, long) Kept<T>(T[] data, long[] shape)
        where T : unmanaged => (OrtValue.CreateTensorValueFromMemory(data, shape), (long)data.Length * sizeof(T));

    /// <summary>
    /// Moves a float weight held in a <c>Constant</c> node (as paddle2onnx and older exporters write them) into an
    /// initializer of the same name, which every consumer reads alike and a candidate can override; null when the
    /// graph holds no such node.
    /// </summary>
    private static TensorProto? PromoteConstant(GraphProto graph, string name)
    {
        var node = graph.Node.FirstOrDefault(n => n.OpType == "Constant" && n.Output.Count == 1 && n.Output[0] == name);
        var value = node?.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
        if (node is null || value is null || value.DataType != (int)TensorProto.Types.DataType.Float)
        {
            return null;
        }

        graph.Node.Remove(node);
        var initializer = value.Clone();
        initializer.Name = name;
        graph.Initializer.Add(initializer);
        return initializer;
    }

    public void Dispose()
    {
        _prefix?.Dispose();
        _session.Dispose();
        _options.Dispose();
        _runs.Dispose();
    }

    private double Loss(ModelOutputs outputs)
    {
        var loss = new LossSum(this);
        loss.Add(new OutputBatch(0, outputs.Samples, outputs.Samples, outputs.Classes, outputs.SampleShape ?? [outputs.Classes]), outputs.Outputs);
        return loss.Mean;
    }

    /// <summary>
    /// A run's loss, its samples' terms added in sample order as batches arrive, so that a streamed run gives the
    /// figure of the whole output to the last bit: mean cross-entropy against the labels, or the divergence from the
    /// float model's output that <see cref="OutputLoss"/> names, per sample.
    /// </summary>
    private sealed class LossSum(MeasuredLoss owner)
    {
        private double _sum;
        private int _samples;
        private double[]? _row;

        /// <summary>The mean over the run's samples.</summary>
        public double Mean => _sum / _samples;

        public void Add(OutputBatch batch, ReadOnlySpan<float> values)
        {
            _samples = batch.Total;
            var shape = batch.SampleShape;
            var classLogits = owner._form.Comparison == OutputComparison.Logits && shape.Length == 1;
            for (var i = 0; i < batch.Count; i++)
            {
                var s = batch.First + i;
                var q = values.Slice(i * batch.Classes, batch.Classes);
                if (classLogits)
                {
                    AddClassTerms(s, q);
                    continue;
                }

                // Every other form, per position: a class distribution along the class axis (a recognizer's time
                // step), an element of a probability map, or a value.
                var p = owner._reference.Outputs.AsSpan(s * batch.Classes, batch.Classes);
                _sum += owner._form.Comparison switch
                {
                    OutputComparison.BinaryProbabilities => BinaryKl(p, q),
                    OutputComparison.Values => SquaredError(p, q),
                    _ => owner.CategoricalKl(p, q, shape, owner._form.Comparison == OutputComparison.Logits, owner._labels is { } labels && shape.Length == 1 ? labels[s] : -1),
                };
            }
        }

        // Samples x classes logits: cross-entropy against the label, or KL divergence from the float model's softmax.
        private void AddClassTerms(int sample, ReadOnlySpan<float> logits)
        {
            var probabilities = _row is { } row && row.Length == logits.Length ? row : _row = new double[logits.Length];
            SoftmaxRow(logits, probabilities);
            if (owner._labels is { } labels)
            {
                _sum -= Math.Log(Math.Max(probabilities[labels[sample]], 1e-30));
                return;
            }

            var reference = owner._floatProbabilities[sample];
            for (var c = 0; c < probabilities.Length; c++)
            {
                var p = reference[c];
                _sum += p > 0 ? p * Math.Log(p / Math.Max(probabilities[c], 1e-30)) : 0;
            }
        }
    }

    // Mean over positions of KL(p || q) along the class axis, or of -log q[label] with a label; logits are
    // softmaxed per position, probabilities (a Softmax output) are taken as they are.
    private double CategoricalKl(ReadOnlySpan<float> p, ReadOnlySpan<float> q, long[] shape, bool logits, long label)
    {
        var axis = (int)(_form.Axis < 0 ? _form.Axis + shape.Length + 1 : _form.Axis) - 1;
        axis = Math.Clamp(axis, 0, shape.Length - 1);
        var classes = (int)shape[axis];
        var inner = (int)shape.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var outer = p.Length / Math.Max(1, classes * inner);
        var pp = new double[classes];
        var qq = new double[classes];
        double sum = 0;
        for (var o = 0; o < outer; o++)
        {
            for (var i = 0; i < inner; i++)
            {
                var start = (o * classes * inner) + i;
                if (label >= 0 && label < classes)
                {
                    Distribution(q, start, inner, logits, 1, qq);
                    sum -= Math.Log(Math.Max(qq[label], 1e-30));
                    continue;
                }

                Distribution(p, start, inner, logits, _form.Temperature, pp);
                Distribution(q, start, inner, logits, _form.Temperature, qq);

                for (var k = 0; k < classes; k++)
                {
                    sum += pp[k] > 0 ? pp[k] * Math.Log(pp[k] / Math.Max(qq[k], 1e-30)) : 0;
                }
            }
        }

        return sum / Math.Max(1, outer * inner);
    }

    // A class distribution from logits (softmax; the temperature does not apply) or from probabilities, these at
    // temperature T as p^(1/T) normalised: log p is the logits less a constant, so that is softmax(logits / T)
    // without the logits. A probability that float32 rounded to zero stays zero.
    private static void Distribution(ReadOnlySpan<float> values, int start, int stride, bool logits, double temperature, double[] into)
    {
        double max = double.NegativeInfinity, total = 0;
        for (var k = 0; k < into.Length; k++)
        {
            into[k] = values[start + (k * stride)];
            max = Math.Max(max, into[k]);
        }

        for (var k = 0; k < into.Length; k++)
        {
            into[k] = logits ? Math.Exp(into[k] - max)
                : temperature == 1 || into[k] <= 0 ? Math.Max(into[k], 0)
                : Math.Exp(Math.Log(into[k]) / temperature);
            total += into[k];
        }

        for (var k = 0; k < into.Length; k++)
        {
            into[k] = total > 0 ? into[k] / total : 1.0 / into.Length;
        }
    }

    // Mean over elements of the binary KL divergence of independent probabilities (a Sigmoid map).
    private static double BinaryKl(ReadOnlySpan<float> p, ReadOnlySpan<float> q)
    {
        const double Floor = 1e-7;
        double sum = 0;
        for (var i = 0; i < p.Length; i++)
        {
            var a = Math.Clamp(p[i], Floor, 1 - Floor);
            var b = Math.Clamp(q[i], Floor, 1 - Floor);
            sum += (a * Math.Log(a / b)) + ((1 - a) * Math.Log((1 - a) / (1 - b)));
        }

        return sum / Math.Max(1, p.Length);
    }

    private static double SquaredError(ReadOnlySpan<float> p, ReadOnlySpan<float> q)
    {
        double sum = 0;
        for (var i = 0; i < p.Length; i++)
        {
            var d = (double)q[i] - p[i];
            sum += d * d;
        }

        return sum / Math.Max(1, p.Length);
    }

    private static double[][] Softmax(ModelOutputs outputs)
    {
        var result = new double[outputs.Samples][];
        for (var i = 0; i < outputs.Samples; i++)
        {
            result[i] = new double[outputs.Classes];
            SoftmaxRow(outputs.Outputs.AsSpan(i * outputs.Classes, outputs.Classes), result[i]);
        }

        return result;
    }

    private static void SoftmaxRow(ReadOnlySpan<float> row, double[] p)
    {
        var max = double.NegativeInfinity;
        foreach (var v in row)
        {
            max = Math.Max(max, v);
        }

        double total = 0;
        for (var c = 0; c < p.Length; c++)
        {
            p[c] = Math.Exp(row[c] - max);
            total += p[c];
        }

        for (var c = 0; c < p.Length; c++)
        {
            p[c] /= total;
        }
    }
}

/// <summary>
/// Measures one tensor's candidates, one after another (see <see cref="MeasuredLoss.Probe"/>): on the part of the
/// graph the tensor reaches, fed its frontier computed once, or on the whole graph.
/// </summary>
internal sealed class CandidateProbe : ICandidateProbe
{
    private readonly MeasuredLoss _owner;
    private readonly string _name;
    private readonly PartRun? _part;

    internal CandidateProbe(MeasuredLoss owner, string name, PartRun? part)
    {
        _owner = owner;
        _name = name;
        _part = part;
    }

    /// <summary>Whether candidates run on the tensor's part of the graph rather than the whole of it.</summary>
    public bool OnPart => _part is not null;

    /// <summary>The loss with the tensor replaced by <paramref name="values"/>, minus the float model's.</summary>
    public double Increase(float[] values) => _part is null ? _owner.Increase(_name, values) : _owner.Increase(_part, values);

    public void Dispose() => _part?.Dispose();
}

/// <summary>A tensor's part of the graph, opened, with its frontier on every sample and its loss with the float weight.</summary>
internal sealed class PartRun(AffectedGraph part, List<(string Name, OrtValue Value)[]> batches, int batchSize) : IDisposable
{
    public AffectedGraph Part { get; } = part;

    public List<(string Name, OrtValue Value)[]> Batches { get; } = batches;

    public int BatchSize { get; } = batchSize;

    public InferenceSession? Session { get; set; }

    public double Baseline { get; set; }

    public void Dispose()
    {
        Session?.Dispose();
        foreach (var (_, value) in Batches.SelectMany(b => b))
        {
            value.Dispose();
        }
    }
}
