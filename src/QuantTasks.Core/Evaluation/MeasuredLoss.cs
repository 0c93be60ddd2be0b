using Google.Protobuf;
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
internal sealed class MeasuredLoss
{
    private readonly ModelProto _model;
    private readonly DataFile _data;
    private readonly string? _output;
    private readonly string _modelPath;
    private readonly long[]? _labels;
    private readonly double[][] _floatProbabilities;
    private readonly double _floatLoss;

    /// <summary>Runs the float model once, for the reference loss.</summary>
    public MeasuredLoss(OnnxModel model, DataFile data, string? output)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        // Parsed once from the in-memory bytes (external data resolved); each candidate works on a clone.
        var bytes = model.ToBytes();
        _model = ModelProto.Parser.ParseFrom(bytes);
        _data = data;
        _output = output;
        _modelPath = model.Path;
        _labels = data.Labels();
        var outputs = ModelEvaluator.Run(bytes, data, output, model.Path);
        _floatProbabilities = Softmax(outputs);
        _floatLoss = Loss(outputs);
    }

    /// <summary>The loss with tensor <paramref name="name"/> replaced by <paramref name="values"/>, minus the float model's.</summary>
    public double Increase(string name, float[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var proto = _model.Clone();
        OnnxModel.SetFloatValues(OnnxModel.FindTensor(proto.Graph, name) ?? throw new ArgumentException($"No tensor '{name}' in the model.", nameof(name)), values);
        return Loss(ModelEvaluator.Run(proto.ToByteArray(), _data, _output, _modelPath)) - _floatLoss;
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
