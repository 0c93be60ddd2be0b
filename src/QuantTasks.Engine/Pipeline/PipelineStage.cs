namespace QuantTasks.Engine.Pipeline;

/// <summary>What a stage may use besides the job: progress within the stage, remarks for people, cancellation.</summary>
/// <param name="Progress">The stage's own progress, 0 to 1 (the pipeline maps it into the model's).</param>
/// <param name="Note">Remarks for people (a fall-back to the CPU, a cache entry discarded).</param>
/// <param name="Cancellation">Ctrl+C or MSBuild's cancel; a stage checks it between units of work.</param>
internal sealed record StageContext(IProgress<double> Progress, Action<string>? Note, CancellationToken Cancellation);

/// <summary>
/// One step of a model's job. A stage reads what earlier stages put in the <see cref="ModelJob"/> and adds its own
/// part; it is named once, here, and the progress display and the report's timings use that name. A new stage is
/// one subclass placed in <see cref="QuantizationPipeline.DefaultStages"/> (or in a caller's list); a stage that
/// changes weight values goes after <c>quantize</c>, before <c>encode</c> (see docs/architecture.md).
/// </summary>
internal abstract class PipelineStage
{
    /// <summary>The stage's name in progress lines and the report's timings.</summary>
    public abstract string Name { get; }

    /// <summary>Its share of a model's time, for the progress bar (any positive scale; shares are normalized).</summary>
    public virtual double Share => 1;

    /// <summary>Runs the stage on a job.</summary>
    public abstract void Run(ModelJob job, StageContext context);

    public override string ToString() => Name;
}
