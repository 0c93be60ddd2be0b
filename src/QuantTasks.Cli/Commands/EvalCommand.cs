using System.CommandLine;
using System.Globalization;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Inspection;
using QuantTasks.Onnx;

namespace QuantTasks.Cli.Commands;

/// <summary><c>dotnet quant eval MODEL_OR_BLOB --data NPZ [--json]</c>: top-1 accuracy against the data's labels.</summary>
internal static class EvalCommand
{
    public static Command Create(CommandConsole console)
    {
        var path = new Argument<string>("MODEL_OR_BLOB") { Description = "An ONNX model or a QuantTasks blob." };
        var data = new Option<string>("--data") { Description = "Samples with a 'label' array (.npz).", Required = true };
        var output = new Option<string?>("--output") { Description = "The graph output holding the logits. Default: the first." };
        var json = new Option<bool>("--json") { Description = "Write {\"metric\", \"value\", \"samples\"} to standard output." };
        var command = new Command("eval", "Top-1 accuracy of a float model or of a blob on labelled samples.")
        {
            path,
            data,
            output,
            json,
        };
        command.SetAction(parse =>
        {
            var file = parse.GetRequiredValue(path);
            var samples = DataFile.Load(parse.GetRequiredValue(data));
            var labels = samples.Labels() ?? throw new QuantException(ErrorCode.DataMissingArray,
                $"'{samples.Path}' has no 'label' array; eval measures top-1 accuracy against labels.", new SourceLocation(samples.Path));
            var model = BlobFiles.IsBlob(file) ? BlobFiles.Decode(BlobFiles.Read(file), file) : OnnxModel.Load(file).ToBytes();
            var outputs = ModelEvaluator.Run(model, samples, parse.GetValue(output), file);
            if (labels.Length != outputs.Samples)
            {
                throw new QuantException(ErrorCode.DataMissingArray,
                    $"'{samples.Path}' has {labels.Length} labels for {outputs.Samples} samples.", new SourceLocation(samples.Path));
            }

            var top1 = ModelEvaluator.Top1(outputs, labels);
            if (parse.GetValue(json))
            {
                console.WriteJson(new EvalOutput("top1", Math.Round(top1, 4), outputs.Samples));
            }
            else
            {
                console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"top-1 {top1:0.00}% on {outputs.Samples} samples ({file})"));
            }

            return 0;
        });
        return command;
    }

    private sealed record EvalOutput(string Metric, double Value, int Samples);
}
