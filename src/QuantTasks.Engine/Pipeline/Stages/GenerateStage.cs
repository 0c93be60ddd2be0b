using QuantTasks.CodeGeneration;

namespace QuantTasks.Engine.Pipeline.Stages;

/// <summary>The C# loader the consuming app compiles: <c>CreateSession</c> and the report's figures as <c>Info</c>.</summary>
internal sealed class GenerateStage : PipelineStage
{
    public override string Name => "generate";

    public override double Share => 0.02;

    public override void Run(ModelJob job, StageContext context) =>
        job.Code = LoaderGenerator.Generate(job.Namespace, job.Report, QuantizationPipeline.ToolVersion);
}
