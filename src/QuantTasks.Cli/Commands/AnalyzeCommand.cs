using System.CommandLine;
using System.Globalization;
using QuantTasks.Engine.Hessian;
using QuantTasks.Policy;
using QuantTasks.Progress;
using Spectre.Console;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// <c>dotnet quant analyze MODEL --data NPZ ...</c>: Hessian sensitivity per weight tensor, a progress bar and a
/// table for people, the contract's JSON for tools.
/// </summary>
internal static class AnalyzeCommand
{
    public static Command Create(CommandConsole console)
    {
        var defaults = new SensitivityOptions();
        var model = new Argument<string>("MODEL") { Description = "The ONNX model." };
        var data = new Option<string>("--data") { Description = "Calibration samples (.npz; labels optional).", Required = true };
        var method = new Option<string>("--method") { Description = "trace, eigenvalue or both.", DefaultValueFactory = _ => "trace" };
        method.AcceptOnlyFromAmong("trace", "eigenvalue", "both");
        var loss = new Option<string>("--loss") { Description = "auto, cross-entropy, kl or mse.", DefaultValueFactory = _ => "auto" };
        loss.AcceptOnlyFromAmong("auto", "cross-entropy", "kl", "mse");
        var samples = new Option<int>("--samples") { Description = "Calibration samples used.", DefaultValueFactory = _ => defaults.Samples };
        var batchSize = new Option<int>("--batch-size") { Description = "Samples per batch.", DefaultValueFactory = _ => defaults.BatchSize };
        var maxIterations = new Option<int>("--max-iterations") { Description = "Most probes or power iterations per estimate.", DefaultValueFactory = _ => defaults.MaxIterations };
        var tolerance = new Option<double>("--tolerance") { Description = "Relative precision at which an estimate stops.", DefaultValueFactory = _ => defaults.Tolerance };
        var sketch = new Option<int>("--sketch") { Description = "Hutch++'s sketch rank for the trace; 0 for Hutchinson's estimator alone.", DefaultValueFactory = _ => defaults.Sketch };
        var seed = new Option<long>("--seed") { Description = "Seed of the random probes.", DefaultValueFactory = _ => defaults.Seed };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda.", DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong("auto", "cpu", "cuda");
        var output = new Option<string?>("--output") { Description = "The graph output holding the logits. Default: the first." };
        var json = new Option<bool>("--json") { Description = "Write the contract's JSON to standard output." };
        var command = new Command("analyze", "Hessian sensitivity per weight tensor: trace (Hutchinson) and top eigenvalue (power iteration).")
        {
            model, data, method, loss, samples, batchSize, maxIterations, tolerance, sketch, seed, device, output, json,
        };
        command.SetAction(parse =>
        {
            foreach (var (option, value) in new[] { (samples.Name, parse.GetValue(samples)), (batchSize.Name, parse.GetValue(batchSize)), (maxIterations.Name, parse.GetValue(maxIterations)) })
            {
                if (value < 1)
                {
                    throw new Diagnostics.QuantException(Diagnostics.ErrorCode.Usage, $"{option} must be at least 1; it is {value}.");
                }
            }

            var tol = parse.GetValue(tolerance);
            if (tol is <= 0 or > 1)
            {
                throw new Diagnostics.QuantException(Diagnostics.ErrorCode.Usage, $"--tolerance must be greater than 0 and at most 1; it is {tol.ToString(CultureInfo.InvariantCulture)}.");
            }

            if (parse.GetValue(sketch) is < 0 or > 256)
            {
                throw new Diagnostics.QuantException(Diagnostics.ErrorCode.Usage, $"--sketch must be between 0 and 256; it is {parse.GetValue(sketch)}.");
            }

            var options = new AnalysisOptions(
                Enum.Parse<AnalysisMethod>(parse.GetRequiredValue(method), ignoreCase: true),
                parse.GetRequiredValue(loss) switch { "cross-entropy" => LossKind.CrossEntropy, "kl" => LossKind.Kl, "mse" => LossKind.Mse, _ => LossKind.Auto },
                parse.GetValue(samples),
                parse.GetValue(batchSize),
                parse.GetValue(maxIterations),
                tol,
                parse.GetValue(seed),
                Enum.Parse<DeviceKind>(parse.GetRequiredValue(device), ignoreCase: true),
                parse.GetValue(output),
                parse.GetValue(sketch));
            var modelPath = parse.GetRequiredValue(model);
            var dataPath = parse.GetRequiredValue(data);
            SensitivityReport report;
            if (console.Human.Profile.Capabilities.Interactive && !parse.GetValue(json))
            {
                report = null!;
                console.Human.Progress().Start(context =>
                {
                    var tasks = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                    var progress = new SynchronousProgress<EstimatorProgress>(p =>
                    {
                        if (!tasks.TryGetValue(p.Estimator, out var task))
                        {
                            tasks[p.Estimator] = task = context.AddTask(p.Estimator, maxValue: p.MaxSteps);
                        }

                        task.Value = p.Step;
                    });
                    report = SensitivityAnalysis.Run(modelPath, dataPath, options, progress, console.Note);
                    foreach (var task in tasks.Values)
                    {
                        task.Value = task.MaxValue;
                    }
                });
            }
            else
            {
                report = SensitivityAnalysis.Run(modelPath, dataPath, options, null, console.Note);
            }

            if (parse.GetValue(json))
            {
                console.WriteJson(report);
            }
            else
            {
                Render(console.Human, report);
            }

            return 0;
        });
        return command;
    }

    private static void Render(IAnsiConsole output, SensitivityReport report)
    {
        output.MarkupLineInterpolated($"[bold]{report.Model}[/]: loss {report.Loss}, {report.Samples} samples, {report.Probes} probes, {report.Seconds:0.0} s on {report.Device}");
        var table = new Table().Border(TableBorder.Rounded).AddColumn("Tensor")
            .AddColumn(new TableColumn("Params").RightAligned())
            .AddColumn(new TableColumn("Trace").RightAligned())
            .AddColumn(new TableColumn("Top eigenvalue").RightAligned())
            .AddColumn(new TableColumn("Sensitivity").RightAligned());
        foreach (var t in report.Tensors)
        {
            table.AddRow(
                Markup.Escape(t.Name),
                t.Params.ToString("N0", CultureInfo.InvariantCulture),
                t.Trace?.ToString("G4", CultureInfo.InvariantCulture) ?? "",
                t.TopEigenvalue?.ToString("G4", CultureInfo.InvariantCulture) ?? "",
                t.Sensitivity.ToString("G4", CultureInfo.InvariantCulture));
        }

        output.Write(table);
    }
}
