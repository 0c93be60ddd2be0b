using System.CommandLine;
using System.Globalization;
using QuantTasks.Inspection;
using QuantTasks.Onnx;
using Spectre.Console;

namespace QuantTasks.Cli.Commands;

/// <summary><c>dotnet quant inspect PATH [--json]</c>: a model's quantizable weights, opset and inputs.</summary>
internal static class InspectCommand
{
    public static Command Create(CommandConsole console)
    {
        var path = new Argument<string>("PATH") { Description = "An ONNX model (.onnx)." };
        var json = new Option<bool>("--json") { Description = "Write the contract's JSON to standard output instead of a table." };
        var command = new Command("inspect", "List a model's quantizable weight tensors (name, shape, parameters, bytes, consuming op), its opset and inputs.")
        {
            path,
            json,
        };
        command.SetAction(parse =>
        {
            var inspection = ModelInspection.Of(OnnxModel.Load(parse.GetRequiredValue(path)));
            if (parse.GetValue(json))
            {
                console.WriteJson(inspection);
            }
            else
            {
                Render(console.Human, inspection);
            }

            return 0;
        });
        return command;
    }

    private static void Render(IAnsiConsole output, ModelInspection inspection)
    {
        output.MarkupLineInterpolated($"[bold]{inspection.Path}[/] ({inspection.Format}, opset {inspection.Opset})");
        foreach (var input in inspection.Inputs)
        {
            var dims = string.Join(" x ", input.Shape.Select(d => Convert.ToString(d, CultureInfo.InvariantCulture) ?? "?"));
            output.MarkupLineInterpolated($"input [bold]{input.Name}[/]: {dims}");
        }

        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("Tensor")
            .AddColumn("Shape")
            .AddColumn(new TableColumn("Params").RightAligned())
            .AddColumn(new TableColumn("Bytes").RightAligned())
            .AddColumn("Op");
        foreach (var tensor in inspection.Tensors)
        {
            table.AddRow(
                Markup.Escape(tensor.Name),
                string.Join(" x ", tensor.Shape),
                tensor.Params.ToString("N0", CultureInfo.InvariantCulture),
                tensor.Bytes.ToString("N0", CultureInfo.InvariantCulture),
                tensor.Op);
        }

        table.AddRow(
            new Markup($"[bold]{inspection.Tensors.Count} tensors[/]"),
            Text.Empty,
            new Markup($"[bold]{inspection.Tensors.Sum(t => t.Params).ToString("N0", CultureInfo.InvariantCulture)}[/]"),
            new Markup($"[bold]{inspection.Tensors.Sum(t => t.Bytes).ToString("N0", CultureInfo.InvariantCulture)}[/]"),
            Text.Empty);
        output.Write(table);
    }
}
