using System.Text.Json;
using QuantTasks.Caching;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Runtime;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>
/// Reads the model and its external data, hashes everything the result depends on, and asks the cache: on a hit
/// the job carries the cached result and no later stage runs.
/// </summary>
internal sealed class LoadStage : PipelineStage
{
    /// <summary>
    /// The engine's own identity for content hashes: its version and the bytes of the assemblies that compute
    /// a result, so that a changed engine never reuses another engine's entries even when the version number
    /// did not move (builds are deterministic, so an unchanged engine keeps its fingerprint).
    /// </summary>
    private static readonly Lazy<string> s_engineFingerprint = new(() =>
    {
        var hash = new ContentHash().Add("version", QuantizationPipeline.ToolVersion);
        foreach (var assembly in new[] { typeof(QuantizationPipeline).Assembly, typeof(ContentHash).Assembly, typeof(QuantBlob).Assembly })
        {
            hash.AddFile(assembly.GetName().Name!, assembly.Location.Length > 0 ? assembly.Location : null);
        }

        return Convert.ToHexStringLower(hash.Finish());
    });

    public override string Name => "load";

    public override double Share => 0.05;

    public override void Run(ModelJob job, StageContext context)
    {
        job.Model = OnnxModel.Load(job.ModelPath);
        job.Inputs = InputFiles(job.Loaded, job.Model);
        job.Hash = Hash(job);
        job.Cached = job.Pipeline.Cache?.TryGet(job.Key, context.Note, context.Cancellation);
    }

    /// <summary>The model, its external data files and the data files: what a build must watch for changes.</summary>
    private static string[] InputFiles(LoadedPolicy loaded, OnnxModel model)
    {
        var folder = Path.GetDirectoryName(model.FullPath)!;
        var data = new[] { loaded.Policy.Data.Calibration, loaded.Policy.Data.Evaluation, loaded.Policy.Data.Training }
            .OfType<string>()
            .Select(loaded.Resolve);
        return new[] { model.FullPath }
            .Concat(model.ExternalDataLocations.Select(l => Path.GetFullPath(Path.Combine(folder, l))))
            .Concat(data)
            .Distinct(StringComparer.Ordinal)
            .ToArray();
    }

    private static byte[] Hash(ModelJob job)
    {
        // The policy without its model list: another model's entry does not change this model's result.
        var loaded = job.Loaded;
        var policy = JsonSerializer.SerializeToNode(loaded.Policy, PolicyLoader.BindingOptions)!.AsObject();
        policy.Remove("models");
        var hash = new ContentHash()
            .Add("tool", QuantizationPipeline.ToolVersion)
            .Add("engine", s_engineFingerprint.Value)
            .Add("namespace", job.Namespace)
            .AddFile("model", job.Model.FullPath)
            .Add("model-options", JsonSerializer.Serialize(job.Options, PolicyLoader.BindingOptions))
            .Add("policy", policy.ToJsonString())
            .AddFile("calibration", loaded.Policy.Data.Calibration is { } c ? loaded.Resolve(c) : null)
            .AddFile("evaluation", loaded.Policy.Data.Evaluation is { } e ? loaded.Resolve(e) : null)
            .AddFile("training", loaded.Policy.Data.Training is { } t ? loaded.Resolve(t) : null);
        var folder = Path.GetDirectoryName(job.Model.FullPath)!;
        foreach (var location in job.Model.ExternalDataLocations)
        {
            hash.AddFile("external:" + location, Path.Combine(folder, location));
        }

        return hash.Finish();
    }
}
