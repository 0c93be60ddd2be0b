using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Weights;
using TorchSharp;

namespace QuantTasks.Engine.Hessian;

/// <summary>Which estimates to make.</summary>
internal enum AnalysisMethod
{
    /// <summary>Hessian trace per tensor (Hutchinson; HAWQ-V2).</summary>
    Trace,

    /// <summary>Top Hessian eigenvalue per tensor (power iteration; HAWQ).</summary>
    Eigenvalue,

    /// <summary>Both.</summary>
    Both,
}

/// <summary>Settings of one analysis; the defaults are the policy's.</summary>
/// <param name="Method">What to estimate.</param>
/// <param name="Loss">The loss whose Hessian is measured.</param>
/// <param name="Samples">Calibration samples (the first ones of the file).</param>
/// <param name="BatchSize">Samples per batch.</param>
/// <param name="MaxIterations">Most probes or power iterations per estimate.</param>
/// <param name="Tolerance">Relative precision at which an estimate stops.</param>
/// <param name="Seed">Seed of the random probes.</param>
/// <param name="Device">auto, cpu or cuda.</param>
/// <param name="Output">The graph output holding the logits, or null for the first.</param>
/// <param name="Sketch">Hutch++'s sketch rank for the trace; 0 for Hutchinson's estimator alone.</param>
internal sealed record AnalysisOptions(
    AnalysisMethod Method = AnalysisMethod.Trace,
    LossKind Loss = LossKind.Auto,
    int Samples = PolicyDefaults.Samples,
    int BatchSize = PolicyDefaults.BatchSize,
    int MaxIterations = PolicyDefaults.MaxIterations,
    double Tolerance = PolicyDefaults.Tolerance,
    long Seed = 0,
    DeviceKind Device = DeviceKind.Auto,
    string? Output = null,
    int Sketch = PolicyDefaults.Sketch);

/// <summary>One tensor's sensitivity, as <c>analyze --json</c> reports it.</summary>
/// <param name="Name">The weight's name.</param>
/// <param name="Params">Elements.</param>
/// <param name="Trace">Trace of its Hessian block, when estimated.</param>
/// <param name="TopEigenvalue">Top eigenvalue of its block, when estimated.</param>
/// <param name="Sensitivity">What the bit search uses: trace / params (HAWQ-V2), or top eigenvalue / params when only that was estimated.</param>
internal sealed record TensorSensitivity(string Name, long Params, double? Trace, double? TopEigenvalue, double Sensitivity)
{
    /// <summary>The Hessian block's diagonal (Hutchinson), for Hessian-weighted quantizers; not in the JSON.</summary>
    [JsonIgnore]
    public float[]? Diagonal { get; init; }
}

/// <summary>The result of an analysis; serializes to the contract's JSON.</summary>
/// <param name="Model">The model file.</param>
/// <param name="Loss">The loss used (auto resolved): cross-entropy, kl or mse.</param>
/// <param name="Samples">Calibration samples used.</param>
/// <param name="Seconds">Wall time.</param>
/// <param name="Device">Where it ran.</param>
/// <param name="Probes">Hutchinson probes taken (0 when the trace was not estimated).</param>
/// <param name="Tensors">Per weight tensor, in catalog order.</param>
internal sealed record SensitivityReport(string Model, string Loss, int Samples, double Seconds, string Device, int Probes, IReadOnlyList<TensorSensitivity> Tensors);

/// <summary>
/// HAWQ's sensitivity analysis of a model: per weight tensor, the trace and top eigenvalue of its block of the
/// Hessian of the mean loss over the calibration samples, and the block's diagonal.
/// </summary>
internal static class SensitivityAnalysis
{
    /// <summary>Runs the analysis.</summary>
    /// <param name="modelPath">The ONNX model.</param>
    /// <param name="dataPath">Calibration data (.npz or .npy).</param>
    /// <param name="options">What and how to estimate.</param>
    /// <param name="progress">Hears of each probe or iteration.</param>
    /// <param name="note">Receives remarks for people (such as a fall-back to the CPU).</param>
    /// <exception cref="QuantException">Bad model, data or device, or an operator the executor does not support.</exception>
    public static SensitivityReport Run(string modelPath, string dataPath, AnalysisOptions options,
        IProgress<EstimatorProgress>? progress = null, Action<string>? note = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var clock = Stopwatch.StartNew();
        var model = OnnxModel.Load(modelPath);
        var weights = WeightCatalog.Find(model);
        var data = DataFile.Load(dataPath);

        // As in the pipeline's plan stage.
        InputChecks.RequireRunnable(model.ToBytes(), data, options.Output, modelPath);
        foreach (var weight in weights)
        {
            InputChecks.RequireFinite(model.ReadFloats(model.FindTensor(weight.Name)!), weight.Name, modelPath);
        }

        return Run(model, weights, data, options, progress, note, clock);
    }

    /// <summary>Runs the analysis on an already loaded model and weight catalog.</summary>
    public static SensitivityReport Run(OnnxModel model, IReadOnlyList<WeightTensor> weights, DataFile data, AnalysisOptions options,
        IProgress<EstimatorProgress>? progress = null, Action<string>? note = null, Stopwatch? clock = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(options);
        clock ??= Stopwatch.StartNew();
        LibTorch.EnsureLoaded(note);
        var device = ComputeDevice.Select(options.Device, "sensitivity.device", "the Hessian analysis", note);
        if (weights.Count == 0)
        {
            return new SensitivityReport(model.Path, "none", 0, 0, device.type.ToString().ToLowerInvariant(), 0, []);
        }

        using var graph = TorchGraph.Compile(model, weights, device);
        var oracle = new HessianOracle(graph, data, options.Loss, options.Samples, options.BatchSize, options.Output, device);
        double[]? traces = null;
        float[][]? diagonals = null;
        double[]? eigenvalues = null;
        var probes = 0;
        if (options.Method is AnalysisMethod.Trace or AnalysisMethod.Both)
        {
            (traces, diagonals, probes) = HessianEstimators.TraceAndDiagonal(oracle, options.MaxIterations, options.Tolerance, options.Seed, progress, options.Sketch);
        }

        if (options.Method is AnalysisMethod.Eigenvalue or AnalysisMethod.Both)
        {
            (eigenvalues, _) = HessianEstimators.TopEigenvalues(oracle, options.MaxIterations, options.Tolerance, options.Seed, progress);
        }

        RequireFinite(traces, "trace", weights, model.Path);
        RequireFinite(eigenvalues, "top eigenvalue", weights, model.Path);
        RequireResponsive(traces ?? eigenvalues!, weights, oracle.Loss, model.Path);
        var tensors = weights.Select((w, t) => new TensorSensitivity(
            w.Name,
            w.Params,
            traces?[t],
            eigenvalues?[t],
            (traces?[t] ?? eigenvalues![t]) / w.Params)
        {
            Diagonal = diagonals?[t],
        }).ToArray();
        var loss = JsonNamingPolicy.KebabCaseLower.ConvertName(oracle.Loss.ToString());
        return new SensitivityReport(model.Path, loss, oracle.Samples, Math.Round(clock.Elapsed.TotalSeconds, 3),
            device.type.ToString().ToLowerInvariant(), probes, tensors);
    }

    /// <summary>
    /// Below this Hessian trace (or top eigenvalue) per weight, a tensor's loss does not react to it at float32
    /// precision: the estimates are rounding noise, and so is any ranking of them.
    /// </summary>
    internal const double DegenerateSensitivity = 1e-12;

    /// <summary>Stops a run with a NaN or infinite estimate, which no bit search can rank, naming the first tensor.</summary>
    private static void RequireFinite(double[]? estimates, string what, IReadOnlyList<WeightTensor> weights, string modelPath)
    {
        var bad = estimates is null ? -1 : Array.FindIndex(estimates, e => !double.IsFinite(e));
        if (bad < 0)
        {
            return;
        }

        throw new QuantException(ErrorCode.HessianNotFinite,
            $"The Hessian {what} of tensor '{weights[bad].Name}' is {estimates![bad]} ({estimates.Count(e => !double.IsFinite(e))} of {estimates.Length} tensors are not finite), "
            + $"although the model's outputs on the calibration samples are finite; libtorch returned a non-finite gradient {TransientNaN.Attempts} times in a row. "
            + "Set the environment variable OMP_NUM_THREADS=1 to run libtorch on one thread, and report the model if it persists.",
            new SourceLocation(modelPath));
    }

    /// <summary>Stops a run whose every sensitivity is near zero or negative, saying why and what to change.</summary>
    private static void RequireResponsive(double[] estimates, IReadOnlyList<WeightTensor> weights, LossKind loss, string modelPath)
    {
        var perWeight = estimates.Select((e, t) => e / Math.Max(1, weights[t].Params)).ToArray();
        if (perWeight.Length == 0 || perWeight.Max() > DegenerateSensitivity)
        {
            return;
        }

        var name = JsonNamingPolicy.KebabCaseLower.ConvertName(loss.ToString());
        throw new QuantException(ErrorCode.SensitivityDegenerate,
            $"The loss ({name}) does not react to any weight on the calibration samples: every tensor's sensitivity is at most {DegenerateSensitivity:0e0} "
            + $"(the largest is {perWeight.Max():G3}, {perWeight.Count(p => p < 0)} of {perWeight.Length} negative), so there is nothing to rank bits by. "
            + "Calibrate on samples the model responds to (a detector needs images with text; its map is 0 on blank ones), "
            + "set sensitivity.loss to one that fits the output (mse compares raw outputs), or set sensitivity.method: none.",
            new SourceLocation(modelPath));
    }
}
