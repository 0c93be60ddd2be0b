using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using QuantTasks.Data;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;

namespace QuantTasks.Evaluation;

/// <summary>
/// The loss increase when one weight tensor alone is replaced by its quantized values, measured by ONNX Runtime
/// on the calibration samples: mean cross-entropy against the labels, or without labels the KL divergence from
/// the float model's own softmax. It is what the second-order Omega approximates, at the price of one forward
/// pass over the samples per candidate, and it carries no estimator noise.
/// </summary>
/// <remarks>
/// One ONNX Runtime session serves every candidate: the measured tensors are made overridable initializers (also
/// graph inputs, their stored values the defaults), and a candidate's values are fed as an input. Building a session
/// per candidate, as before, cost more than running it. Threads share the session (ONNX Runtime's Run is
/// thread-safe), so the search measures several tensors' candidates at once. A weight held in a Constant node
/// cannot be overridden; its candidates get a session of their own, the slow way.
/// </remarks>
internal sealed class MeasuredLoss : IDisposable
{
    private readonly ModelProto _model;
    private readonly DataFile _data;
    private readonly string? _output;
    private readonly string _outputName;
    private readonly string _modelPath;
    private readonly long[]? _labels;
    private readonly double[][] _floatProbabilities;
    private readonly double _floatLoss;
    private readonly SessionOptions _options;
    private readonly InferenceSession _session;
    private readonly Dictionary<string, long[]> _overridable;
    private long _candidates;
    private long _elapsedTicks;

    /// <summary>Opens the shared session and runs the float model once, for the reference loss.</summary>
    /// <param name="model">The model.</param>
    /// <param name="data">The calibration samples.</param>
    /// <param name="output">The output compared, or null for the first.</param>
    /// <param name="weights">The tensors whose candidates will be measured (the others keep their values).</param>
    public MeasuredLoss(OnnxModel model, DataFile data, string? output, IEnumerable<string> weights)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(weights);
        // Parsed once from the in-memory bytes (external data resolved); the slow path works on clones.
        var bytes = model.ToBytes();
        _model = ModelProto.Parser.ParseFrom(bytes);
        _data = data;
        _output = output;
        _modelPath = model.Path;
        _labels = data.Labels();

        var shared = _model.Clone();
        var inputs = shared.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        _overridable = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var name in weights)
        {
            var initializer = shared.Graph.Initializer.FirstOrDefault(i => i.Name == name);
            if (initializer is null || initializer.DataType != (int)TensorProto.Types.DataType.Float)
            {
                continue; // a Constant node's weight, or one stored in another type: measured the slow way
            }

            _overridable[name] = initializer.Dims.ToArray();
            if (inputs.Add(name))
            {
                var type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = initializer.DataType, Shape = new TensorShapeProto() } };
                type.TensorType.Shape.Dim.AddRange(initializer.Dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
                shared.Graph.Input.Add(new ValueInfoProto { Name = name, Type = type });
            }
        }

        shared.IrVersion = Math.Max(shared.IrVersion, 4); // overridable initializers: IR 4 and later
        // One thread per Run, without spinning: the search runs several tensors' candidates at once, and ONNX
        // Runtime's own pool spinning beside them would fight them for the cores.
        _options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = 1 };
        _options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        _session = ModelEvaluator.OpenSession(shared.ToByteArray(), _options, model.Path);
        _outputName = output ?? _session.OutputNames[0];
        var outputs = ModelEvaluator.Run(_session, data, _outputName, model.Path, []);
        _floatProbabilities = Softmax(outputs);
        _floatLoss = Loss(outputs);
    }

    /// <summary>Calibration samples each candidate runs on.</summary>
    public int Samples => _floatProbabilities.Length;

    /// <summary>Candidates measured so far, and the seconds they took (summed over threads).</summary>
    public (long Candidates, double Seconds) Throughput => (Interlocked.Read(ref _candidates), TimeSpan.FromTicks(Interlocked.Read(ref _elapsedTicks)).TotalSeconds);

    /// <summary>The loss with tensor <paramref name="name"/> replaced by <paramref name="values"/>, minus the float model's.</summary>
    public double Increase(string name, float[] values) => Increase([(name, values)]);

    /// <summary>The loss with every listed tensor replaced by its values at once (the others float), minus the float model's.</summary>
    public double Increase(IReadOnlyList<(string Name, float[] Values)> replaced)
    {
        ArgumentNullException.ThrowIfNull(replaced);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double increase;
        if (replaced.All(r => _overridable.ContainsKey(r.Name)))
        {
            var inputs = replaced.Select(r => (r.Name, Value: OrtValue.CreateTensorValueFromMemory((float[])r.Values.Clone(), _overridable[r.Name]))).ToArray();
            try
            {
                increase = Loss(ModelEvaluator.Run(_session, _data, _outputName, _modelPath, inputs)) - _floatLoss;
            }
            finally
            {
                foreach (var (_, value) in inputs)
                {
                    value.Dispose();
                }
            }
        }
        else
        {
            var proto = _model.Clone();
            foreach (var (name, values) in replaced)
            {
                OnnxModel.SetFloatValues(OnnxModel.FindTensor(proto.Graph, name) ?? throw new ArgumentException($"No tensor '{name}' in the model.", nameof(replaced)), values);
            }

            increase = Loss(ModelEvaluator.Run(proto.ToByteArray(), _data, _output, _modelPath)) - _floatLoss;
        }

        Interlocked.Increment(ref _candidates);
        Interlocked.Add(ref _elapsedTicks, clock.Elapsed.Ticks);
        return increase;
    }

    public void Dispose()
    {
        _session.Dispose();
        _options.Dispose();
    }

    private double Loss(ModelOutputs outputs)
    {
        var probabilities = Softmax(outputs);
        double sum = 0;
        for (var i = 0; i < outputs.Samples; i++)
        {
            if (_labels is not null)
            {
                sum -= Math.Log(Math.Max(probabilities[i][_labels[i]], 1e-30));
            }
            else
            {
                for (var c = 0; c < outputs.Classes; c++)
                {
                    var p = _floatProbabilities[i][c];
                    sum += p > 0 ? p * Math.Log(p / Math.Max(probabilities[i][c], 1e-30)) : 0;
                }
            }
        }

        return sum / outputs.Samples;
    }

    private static double[][] Softmax(ModelOutputs outputs)
    {
        var result = new double[outputs.Samples][];
        for (var i = 0; i < outputs.Samples; i++)
        {
            var row = outputs.Outputs.AsSpan(i * outputs.Classes, outputs.Classes);
            var max = double.NegativeInfinity;
            foreach (var v in row)
            {
                max = Math.Max(max, v);
            }

            var p = new double[outputs.Classes];
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

            result[i] = p;
        }

        return result;
    }
}
