using System.CommandLine;
using QuantTasks.Diagnostics;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Weights;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// <c>dotnet quant init [--model PATH] [--force]</c>: writes a commented <c>quant.yaml</c>, and the schema beside
/// it so that YAML editors complete and check every key offline.
/// </summary>
internal static class InitCommand
{
    public static Command Create(CommandConsole console)
    {
        var model = new Option<string?>("--model") { Description = "The ONNX model to compress. Default: the only .onnx file in the folder." };
        var calibration = new Option<string?>("--calibration") { Description = "Calibration data (.npz) for the Hessian analysis." };
        var evaluation = new Option<string?>("--evaluation") { Description = "Evaluation data (.npz) for the accuracy gate." };
        var output = new Option<string>("--output", "-o") { Description = "Where to write the policy.", DefaultValueFactory = _ => PolicyLoader.DefaultFileName };
        var force = new Option<bool>("--force") { Description = "Replace an existing policy." };
        var command = new Command("init", "Write a commented quant.yaml policy (and quant.schema.json for editors).")
        {
            model,
            calibration,
            evaluation,
            output,
            force,
        };
        command.SetAction(parse =>
        {
            var policyPath = Path.GetFullPath(parse.GetRequiredValue(output));
            var folder = Path.GetDirectoryName(policyPath)!;
            if (File.Exists(policyPath) && !parse.GetValue(force))
            {
                throw new QuantException(ErrorCode.OutputExists,
                    $"'{parse.GetValue(output)}' already exists. Pass --force to replace it.", new SourceLocation(parse.GetRequiredValue(output)));
            }

            var modelPath = parse.GetValue(model) ?? FindOnlyModel(folder);
            var loaded = OnnxModel.Load(modelPath);
            var weights = WeightCatalog.Find(loaded);
            var calibrationPath = Existing(parse.GetValue(calibration));
            var evaluationPath = Existing(parse.GetValue(evaluation));

            var schemaPath = Path.Combine(folder, "quant.schema.json");
            AtomicFile.WriteAllText(schemaPath, PolicySchema.Text);
            var text = PolicyTemplate.Render(
                "./quant.schema.json",
                PolicyTemplate.Relative(folder, Path.GetFullPath(modelPath)),
                calibrationPath is null ? null : PolicyTemplate.Relative(folder, Path.GetFullPath(calibrationPath)),
                evaluationPath is null ? null : PolicyTemplate.Relative(folder, Path.GetFullPath(evaluationPath)));
            AtomicFile.WriteAllText(policyPath, text);

            // What was written must itself be valid; a failure here is a bug in the template.
            PolicyLoader.Load(policyPath);
            console.WriteLine($"Wrote {parse.GetValue(output)} for {modelPath} ({weights.Count} quantizable tensors, {weights.Sum(w => w.Params):N0} parameters) and quant.schema.json.");
            if (calibrationPath is null)
            {
                console.WriteLine("Without data.calibration the policy rounds each tensor on its own (omega: sensitivity, compensation: none); name a calibration .npz and set omega: calibrated-output-error and compensation: gptq, the defaults that measured best.");
            }

            return 0;
        });
        return command;
    }

    private static string? Existing(string? path)
    {
        if (path is not null && !File.Exists(path))
        {
            throw new QuantException(ErrorCode.FileNotFound, $"Data file '{path}' does not exist.", new SourceLocation(path));
        }

        return path;
    }

    private static string FindOnlyModel(string folder)
    {
        var models = Directory.GetFiles(folder, "*.onnx", SearchOption.TopDirectoryOnly);
        return models.Length switch
        {
            1 => Path.GetRelativePath(Environment.CurrentDirectory, models[0]),
            0 => throw new QuantException(ErrorCode.Usage,
                $"No .onnx file in {folder}. Name the model with --model PATH."),
            _ => throw new QuantException(ErrorCode.Usage,
                $"{models.Length} .onnx files in {folder}; name the one to compress with --model PATH."),
        };
    }
}
