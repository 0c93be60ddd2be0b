using Microsoft.ML.OnnxRuntime;
using QuantTasks.Data;
using QuantTasks.Diagnostics;

namespace QuantTasks.Evaluation;

/// <summary>A model's outputs for every sample of a data file, from ONNX Runtime.</summary>
/// <param name="Outputs">Samples x classes, row-major.</param>
/// <param name="Samples">Number of samples.</param>
/// <param name="Classes">Values per sample.</param>
/// <param name="SampleShape">The shape of one sample's output (the output's dimensions after the batch axis), when known.</param>
internal sealed record ModelOutputs(float[] Outputs, int Samples, int Classes, long[]? SampleShape = null)
{
    /// <summary>The index of the largest output of each sample.</summary>
    public int[] ArgMax()
    {
        var result = new int[Samples];
        for (var s = 0; s < Samples; s++)
        {
            var row = Outputs.AsSpan(s * Classes, Classes);
            var best = 0;
            for (var k = 1; k < row.Length; k++)
            {
                if (row[k] > row[best])
                {
                    best = k;
                }
            }

            result[s] = best;
        }

        return result;
    }
}

/// <summary>Where one batch's outputs sit in a run (<see cref="ModelEvaluator.Each"/>).</summary>
/// <param name="First">The batch's first sample.</param>
/// <param name="Count">Its samples.</param>
/// <param name="Total">The run's samples.</param>
/// <param name="Classes">Output values per sample.</param>
/// <param name="SampleShape">The shape of one sample's output.</param>
internal readonly record struct OutputBatch(int First, int Count, int Total, int Classes, long[] SampleShape);

/// <summary>Takes one batch's output values, valid only during the call.</summary>
/// <param name="batch">Where the batch sits.</param>
/// <param name="values">Its values, <see cref="OutputBatch.Count"/> x <see cref="OutputBatch.Classes"/>.</param>
internal delegate void OutputBatchAction(OutputBatch batch, ReadOnlySpan<float> values);

/// <summary>
/// Runs ONNX models on data files with ONNX Runtime and scores them: top-1 accuracy against labels, top-1
/// agreement with another model, or the mean cosine similarity of outputs. Scores are percentages.
/// </summary>
internal static class ModelEvaluator
{
    private const int BatchSize = 256;

    // Input elements per batch at most: a batch's activations grow with its inputs, and a detector's 32 pages of
    // 640 x 640 in one batch held about 5 GB per run. 2^20 floats keep small models' batches at 256 samples.
    private const long MaxBatchElements = 1 << 20;

    /// <summary>Samples per batch: 256, fewer when the samples are large.</summary>
    internal static int BatchFor(NpyArray[] arrays)
    {
        var perSample = arrays.Sum(a => a.Length / Math.Max(1, a.Rows));
        return (int)Math.Clamp(MaxBatchElements / Math.Max(1, perSample), 1, BatchSize);
    }

    /// <summary>Runs the model (ONNX bytes) on every sample and returns the chosen output.</summary>
    /// <param name="model">The model, serialized.</param>
    /// <param name="data">Samples, with arrays named after the model's inputs (or <c>input</c>).</param>
    /// <param name="outputName">The output to read, or null for the first.</param>
    /// <param name="modelPath">The model's path, for error messages.</param>
    public static ModelOutputs Run(byte[] model, DataFile data, string? outputName, string modelPath)
    {
        ArgumentNullException.ThrowIfNull(data);
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        using var session = CreateSession(model, options, modelPath);
        var inputNames = session.InputNames;
        var output = outputName ?? session.OutputNames[0];
        if (!session.OutputNames.Contains(output))
        {
            throw new QuantException(ErrorCode.PolicyInvalidValue,
                $"Model '{modelPath}' has no output '{output}'; its outputs are {string.Join(", ", session.OutputNames)}.",
                new SourceLocation(modelPath));
        }

        var arrays = inputNames.Select(name => InputArray(data, name, inputNames.Count)).ToArray();
        var samples = (int)arrays[0].Rows;
        foreach (var (array, name) in arrays.Zip(inputNames))
        {
            if (array.Rows != samples)
            {
                throw new QuantException(ErrorCode.DataMissingArray,
                    $"Array '{array.Name}' of '{data.Path}' has {array.Rows} samples but '{arrays[0].Name}' has {samples}; every input needs the same number.",
                    new SourceLocation(data.Path));
            }

            CheckShape(session.InputMetadata[name], array, data.Path, name);
        }

        return Run(session, data, output, modelPath, [], inputNames, inputNames.Count, samples, batchSize: null, perBatch: null);
    }

    /// <summary>
    /// Runs an open session on every sample, with <paramref name="extra"/> fed beside the data (values for
    /// overridable initializers: one session serves every variant of a weight, see <see cref="MeasuredLoss"/>).
    /// The session is only read, so threads may share it.
    /// </summary>
    internal static ModelOutputs Run(InferenceSession session, DataFile data, string output, string modelPath,
        IReadOnlyList<(string Name, OrtValue Value)> extra, CancellationToken cancellation = default) =>
        Run(session, data, output, modelPath, extra, session.InputNames, session.InputNames.Count, samples: null, batchSize: null, perBatch: null, cancellation);

    /// <summary>
    /// Runs an open session whose graph inputs are not all data: <paramref name="dataInputs"/> are fed from
    /// <paramref name="data"/> (<paramref name="modelInputs"/>: how many the whole model has, for the one-input naming
    /// rule), and each batch's other inputs come from <paramref name="perBatch"/> (batch index to values), in batches
    /// of <paramref name="batchSize"/> (by default as <see cref="BatchFor"/> sizes them for the data inputs): the part
    /// of a graph a weight reaches, fed its frontier in the batches <see cref="Batches"/> computed it in (<see cref="AffectedGraph"/>).
    /// </summary>
    internal static ModelOutputs Run(InferenceSession session, DataFile data, string output, string modelPath,
        IReadOnlyList<(string Name, OrtValue Value)> extra, IReadOnlyList<string> dataInputs, int modelInputs, int? samples, int? batchSize,
        Func<int, IReadOnlyList<(string Name, OrtValue Value)>>? perBatch, CancellationToken cancellation = default)
    {
        var results = Array.Empty<float>();
        var total = 0;
        var classes = 0;
        long[]? sampleShape = null;
        Each(session, data, output, modelPath, extra, dataInputs, modelInputs, samples, batchSize, perBatch, (batch, values) =>
        {
            if (sampleShape is null)
            {
                (total, classes, sampleShape) = (batch.Total, batch.Classes, batch.SampleShape);
                results = new float[(long)classes * total];
            }

            values.CopyTo(results.AsSpan(batch.First * classes));
        }, cancellation);
        return new ModelOutputs(results, total, classes, sampleShape);
    }

    /// <summary>
    /// Runs an open session as <see cref="Run(InferenceSession, DataFile, string, string, IReadOnlyList{ValueTuple{string, OrtValue}}, IReadOnlyList{string}, int, int?, int?, Func{int, IReadOnlyList{ValueTuple{string, OrtValue}}}?, CancellationToken)"/>
    /// does, but hands each batch's output values to <paramref name="onBatch"/> in sample order instead of keeping
    /// them: a loss summed over samples needs no run's whole output (a detector's map on 32 pages is 52 MB per run).
    /// The values are ONNX Runtime's and valid only during the call.
    /// </summary>
    internal static void Each(InferenceSession session, DataFile data, string output, string modelPath,
        IReadOnlyList<(string Name, OrtValue Value)> extra, IReadOnlyList<string> dataInputs, int modelInputs, int? samples, int? batchSize,
        Func<int, IReadOnlyList<(string Name, OrtValue Value)>>? perBatch, OutputBatchAction onBatch, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(extra);
        ArgumentNullException.ThrowIfNull(dataInputs);
        ArgumentNullException.ThrowIfNull(onBatch);
        var arrays = dataInputs.Select(name => InputArray(data, name, modelInputs)).ToArray();
        var total = samples ?? (int)arrays[0].Rows;
        if (arrays.Length == 0 && batchSize is null)
        {
            throw new ArgumentException("A run that reads no data input needs its batch size.", nameof(batchSize));
        }

        var first = 0;
        var classes = 0;
        long[]? sampleShape = null;
        RunBatches(session, arrays, total, batchSize ?? BatchFor(arrays), [output], modelPath, data.Path, (count, outputs) =>
        {
            var span = outputs[0].GetTensorDataAsSpan<float>();
            if (sampleShape is null)
            {
                classes = span.Length / count;
                sampleShape = outputs[0].GetTensorTypeAndShape().Shape.Skip(1).ToArray();
            }

            if (span.Length != (long)classes * count)
            {
                throw new QuantException(ErrorCode.DataWrongType,
                    $"Output '{output}' of '{modelPath}' has {span.Length / Math.Max(1, count)} values per sample in one batch and {classes} in another; "
                    + "only outputs of a fixed size per sample can be compared.", new SourceLocation(modelPath));
            }

            onBatch(new OutputBatch(first, count, total, classes, sampleShape), span);
            first += count;
        }, cancellation, extra, dataNames: dataInputs, perBatch: perBatch);
    }

    /// <summary>
    /// Runs an open session in the batches <see cref="Run(InferenceSession, DataFile, string, string, IReadOnlyList{ValueTuple{string, OrtValue}}, CancellationToken)"/>
    /// uses, and hands <paramref name="onBatch"/> each batch's index, sample count and values of <paramref name="outputs"/>
    /// (disposed after the call): the frontier a weight's part of the graph reads, computed once.
    /// </summary>
    /// <returns>The batch size.</returns>
    internal static int Batches(InferenceSession session, DataFile data, IReadOnlyList<string> outputs, string modelPath,
        Action<int, int, IDisposableReadOnlyCollection<OrtValue>> onBatch, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(onBatch);
        var inputNames = session.InputNames;
        var arrays = inputNames.Select(name => InputArray(data, name, inputNames.Count)).ToArray();
        var index = 0;
        var batchSize = BatchFor(arrays);
        RunBatches(session, arrays, (int)arrays[0].Rows, batchSize, outputs, modelPath, data.Path, (count, results) => onBatch(index++, count, results), cancellation);
        return batchSize;
    }

    /// <summary>Opens a session (errors as QT1206, naming the model).</summary>
    internal static InferenceSession OpenSession(byte[] model, SessionOptions options, string modelPath) => CreateSession(model, options, modelPath);

    /// <summary>
    /// Checks that ONNX Runtime accepts the model and, with <paramref name="data"/>, runs it on the first
    /// <paramref name="samples"/> samples: a graph with a cycle, an undefined input, an unknown operator or
    /// shapes that do not fit is reported here, before any stage (the Hessian engine above all) works on it.
    /// </summary>
    /// <exception cref="QuantException"><see cref="Diagnostics.ErrorCode.OnnxInvalidModel"/> with ONNX Runtime's reason.</exception>
    /// <returns>The outputs on those samples; null without data.</returns>
    public static ModelOutputs? Check(byte[] model, DataFile? data, string? outputName, string modelPath, int samples = 1)
    {
        if (data is null)
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            using var session = CreateSession(model, options, modelPath);
            if (outputName is not null && !session.OutputNames.Contains(outputName))
            {
                throw new QuantException(ErrorCode.PolicyInvalidValue,
                    $"Model '{modelPath}' has no output '{outputName}'; its outputs are {string.Join(", ", session.OutputNames)}.",
                    new SourceLocation(modelPath));
            }

            return null;
        }

        return Run(model, data.Take(samples), outputName, modelPath);
    }

    private static InferenceSession CreateSession(byte[] model, SessionOptions options, string modelPath)
    {
        try
        {
            return new InferenceSession(model, options);
        }
        catch (OnnxRuntimeException e)
        {
            throw new QuantException(ErrorCode.OnnxInvalidModel,
                $"ONNX Runtime cannot load model '{modelPath}': {OneLine(e.Message)}. The graph is invalid (a cycle, a value nothing defines, an unknown operator or a type it does not take); export the model again.",
                new SourceLocation(modelPath), e);
        }
    }

    private static IDisposableReadOnlyCollection<OrtValue> RunSession(InferenceSession session, RunOptions runOptions,
        IReadOnlyCollection<string> inputNames, IReadOnlyCollection<OrtValue> values, IReadOnlyList<string> outputs, string modelPath, string dataPath)
    {
        try
        {
            return session.Run(runOptions, inputNames, values, outputs);
        }
        catch (OnnxRuntimeException e)
        {
            throw new QuantException(ErrorCode.OnnxInvalidModel,
                $"ONNX Runtime cannot run model '{modelPath}' on '{dataPath}': {OneLine(e.Message)}. Most often a weight's shape does not fit its operator, or the data's shape does not fit the model's input.",
                new SourceLocation(modelPath), e);
        }
    }

    private static string OneLine(string text) => string.Join(' ', text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries)).TrimEnd('.');

    /// <summary>
    /// Runs the model on the first <paramref name="samples"/> samples in batches of <paramref name="batchSize"/>
    /// and hands each batch's values of <paramref name="outputs"/> (graph outputs, or inner values the caller
    /// added as outputs) to <paramref name="onBatch"/>, so that nothing holds every sample's activations at once.
    /// With <paramref name="maxBatchBytes"/>, the first sample runs alone and its outputs' size fixes a batch size
    /// whose outputs stay within that many bytes (at least one sample, at most <paramref name="batchSize"/>): a
    /// detector's activations at 640 x 640 are tens of megabytes per sample, a LeNet's a few kilobytes. The arrays
    /// handed over are reused for the next batch of the same size (<paramref name="onBatch"/> must not keep them):
    /// a new set per batch was garbage the collector let pile up to hundreds of megabytes on ResNet-50.
    /// </summary>
    public static void Stream(byte[] model, DataFile data, IReadOnlyList<string> outputs, string modelPath, int samples, int batchSize,
        Action<IReadOnlyDictionary<string, (float[] Values, long[] Shape)>> onBatch, long maxBatchBytes = long.MaxValue,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(outputs);
        ArgumentNullException.ThrowIfNull(onBatch);
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        using var session = CreateSession(model, options, modelPath);
        var inputNames = session.InputNames;
        var arrays = inputNames.Select(name => InputArray(data, name, inputNames.Count)).ToArray();
        foreach (var (array, name) in arrays.Zip(inputNames))
        {
            CheckShape(session.InputMetadata[name], array, data.Path, name);
        }

        var total = (int)Math.Min(samples, arrays.Min(a => a.Rows));
        long perSample = 0;
        var buffers = new float[outputs.Count][];
        void Hand(int count, IDisposableReadOnlyCollection<OrtValue> results)
        {
            var batch = new Dictionary<string, (float[], long[])>(StringComparer.Ordinal);
            long bytes = 0;
            for (var i = 0; i < outputs.Count; i++)
            {
                var span = results[i].GetTensorDataAsSpan<float>();
                if (buffers[i]?.Length != span.Length)
                {
                    buffers[i] = new float[span.Length];
                }

                var values = buffers[i];
                span.CopyTo(values);
                bytes += (long)values.Length * sizeof(float);
                batch[outputs[i]] = (values, results[i].GetTensorTypeAndShape().Shape);
            }

            perSample = Math.Max(perSample, bytes / Math.Max(1, count));

            onBatch(batch);
        }

        var first = 0;
        if (maxBatchBytes != long.MaxValue && total > 1)
        {
            RunBatches(session, arrays, 1, 1, outputs, modelPath, data.Path, Hand, cancellation);
            first = 1;
            batchSize = (int)Math.Clamp(maxBatchBytes / Math.Max(1, perSample), 1, batchSize);
        }

        RunBatches(session, arrays, total, batchSize, outputs, modelPath, data.Path, Hand, cancellation, first: first);
    }

    /// <summary>
    /// The first <paramref name="samples"/> samples through the session in batches; <paramref name="onBatch"/> gets
    /// each batch's size and the values of <paramref name="outputs"/>, which are disposed after it returns.
    /// </summary>
    private static void RunBatches(InferenceSession session, NpyArray[] arrays, int samples, int batchSize, IReadOnlyList<string> outputs,
        string modelPath, string dataPath, Action<int, IDisposableReadOnlyCollection<OrtValue>> onBatch, CancellationToken cancellation,
        IReadOnlyList<(string Name, OrtValue Value)>? extra = null, int first = 0, IReadOnlyList<string>? dataNames = null,
        Func<int, IReadOnlyList<(string Name, OrtValue Value)>>? perBatch = null)
    {
        List<string> names = [.. dataNames ?? session.InputNames, .. extra?.Select(e => e.Name) ?? []];
        using var runOptions = new RunOptions();
        var batch = 0;
        for (var start = first; start < samples; start += batchSize, batch++)
        {
            cancellation.ThrowIfCancellationRequested();
            var count = Math.Min(batchSize, samples - start);
            var values = new List<OrtValue>();
            var fed = perBatch?.Invoke(batch) ?? [];
            try
            {
                foreach (var array in arrays)
                {
                    var perSample = (int)(array.Length / array.Rows);
                    var shape = array.Shape.ToArray();
                    shape[0] = count;
                    // Pinned in place, not copied: ONNX Runtime only reads its inputs, and a copy per batch was garbage
                    // (a detector page is 4.9 MB, fed once per candidate).
                    values.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, array.Floats!.AsMemory(start * perSample, count * perSample), shape));
                }

                using var results = RunSession(session, runOptions, [.. names, .. fed.Select(f => f.Name)],
                    [.. values, .. extra?.Select(e => e.Value) ?? [], .. fed.Select(f => f.Value)], outputs, modelPath, dataPath);
                onBatch(count, results);
            }
            finally
            {
                foreach (var value in values)
                {
                    value.Dispose();
                }
            }
        }
    }

    /// <summary>Percentage of samples whose largest output is the label.</summary>
    public static double Top1(ModelOutputs outputs, long[] labels)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        ArgumentNullException.ThrowIfNull(labels);
        var predicted = outputs.ArgMax();
        return 100.0 * predicted.Where((p, i) => p == labels[i]).Count() / outputs.Samples;
    }

    /// <summary>Percentage of samples on which two models pick the same class.</summary>
    public static double Agreement(ModelOutputs reference, ModelOutputs other)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(other);
        var a = reference.ArgMax();
        var b = other.ArgMax();
        return 100.0 * a.Where((p, i) => p == b[i]).Count() / reference.Samples;
    }

    /// <summary>
    /// Percentage of positions at which two models pick the same class, the classes lying along
    /// <paramref name="classAxis"/> of each sample's output (0 = its first axis after the batch): for a recognizer's
    /// time steps x characters, per time step; for a segmentation's classes x height x width, per pixel.
    /// </summary>
    public static double Agreement(ModelOutputs reference, ModelOutputs other, int classAxis)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(other);
        var shape = reference.SampleShape ?? [reference.Classes];
        if (classAxis < 0 || classAxis >= shape.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(classAxis), classAxis, $"The output has {shape.Length} axes per sample.");
        }

        var classes = (int)shape[classAxis];
        var inner = (int)shape.Skip(classAxis + 1).Aggregate(1L, (a, b) => a * b);
        var outer = reference.Classes / Math.Max(1, classes * inner);
        long same = 0, positions = 0;
        for (var s = 0; s < reference.Samples; s++)
        {
            var x = reference.Outputs.AsSpan(s * reference.Classes, reference.Classes);
            var y = other.Outputs.AsSpan(s * other.Classes, other.Classes);
            for (var o = 0; o < outer; o++)
            {
                for (var i = 0; i < inner; i++)
                {
                    var start = (o * classes * inner) + i;
                    same += ArgMaxStrided(x, start, classes, inner) == ArgMaxStrided(y, start, classes, inner) ? 1 : 0;
                    positions++;
                }
            }
        }

        return positions == 0 ? 100.0 : 100.0 * same / positions;
    }

    /// <summary>Percentage of elements on which two probability maps make the same decision at 0.5.</summary>
    public static double BinaryAgreement(ModelOutputs reference, ModelOutputs other)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(other);
        long same = 0;
        for (var k = 0; k < reference.Outputs.Length; k++)
        {
            same += (reference.Outputs[k] > 0.5f) == (other.Outputs[k] > 0.5f) ? 1 : 0;
        }

        return reference.Outputs.Length == 0 ? 100.0 : 100.0 * same / reference.Outputs.Length;
    }

    private static int ArgMaxStrided(ReadOnlySpan<float> values, int start, int count, int stride)
    {
        var best = 0;
        for (var c = 1; c < count; c++)
        {
            if (values[start + (c * stride)] > values[start + (best * stride)])
            {
                best = c;
            }
        }

        return best;
    }

    /// <summary>Mean cosine similarity of each sample's outputs, in percent.</summary>
    public static double Cosine(ModelOutputs reference, ModelOutputs other)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(other);
        double total = 0;
        for (var s = 0; s < reference.Samples; s++)
        {
            var x = reference.Outputs.AsSpan(s * reference.Classes, reference.Classes);
            var y = other.Outputs.AsSpan(s * other.Classes, other.Classes);
            double dot = 0, nx = 0, ny = 0;
            for (var k = 0; k < x.Length; k++)
            {
                dot += (double)x[k] * y[k];
                nx += (double)x[k] * x[k];
                ny += (double)y[k] * y[k];
            }

            total += nx == 0 || ny == 0 ? (nx == ny ? 1 : 0) : dot / Math.Sqrt(nx * ny);
        }

        return 100.0 * total / reference.Samples;
    }

    /// <summary>The array that feeds a graph input: the one named after it, or <c>input</c> for a one-input model.</summary>
    public static NpyArray InputArray(DataFile data, string inputName, int inputCount)
    {
        ArgumentNullException.ThrowIfNull(data);
        var name = data.Contains(inputName) || inputCount > 1 ? inputName : "input";
        var array = data.Get(name);
        if (array.Floats is null)
        {
            throw new QuantException(ErrorCode.DataWrongType,
                $"Array '{name}' of '{data.Path}' feeds model input '{inputName}' and must be float32; it is {array.DType}.",
                new SourceLocation(data.Path));
        }

        if (array.Shape.Count == 0 || array.Rows == 0)
        {
            throw new QuantException(ErrorCode.DataMissingArray,
                $"Array '{name}' of '{data.Path}' holds no samples.", new SourceLocation(data.Path));
        }

        return array;
    }

    private static void CheckShape(NodeMetadata metadata, NpyArray array, string dataPath, string input)
    {
        var expected = metadata.Dimensions;
        if (expected.Length != array.Shape.Count || expected.Skip(1).Zip(array.Shape.Skip(1)).Any(p => p.First > 0 && p.First != p.Second))
        {
            throw new QuantException(ErrorCode.DataWrongType,
                $"Array '{array.Name}' of '{dataPath}' has shape ({string.Join(", ", array.Shape)}) but model input '{input}' takes ({string.Join(", ", expected.Select(d => d < 0 ? "N" : d.ToString(System.Globalization.CultureInfo.InvariantCulture)))}).",
                new SourceLocation(dataPath));
        }
    }
}
