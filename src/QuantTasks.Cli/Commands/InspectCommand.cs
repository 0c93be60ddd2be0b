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
        var path = new Argument<string>("PATH") { Description = "An ONNX model (.onnx) or a QuantTasks blob (.qtblob)." };
        var json = new Option<bool>("--json") { Description = "Write the contract's JSON to standard output instead of a table." };
        var command = new Command("inspect", "List a model's quantizable weight tensors (name, shape, parameters, bytes, consuming op), its opset and inputs.")
        {
            path,
            json,
        };
        command.SetAction(parse =>
        {
            var file = parse.GetRequiredValue(path);
            var inspection = BlobFiles.IsBlob(file)
                ? ModelInspection.Of(BlobFiles.Read(file), file)
                : ModelInspection.Of(OnnxModel.Load(file));
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
        var blob = inspection.Format == "blob";
        if (blob)
        {
            table.AddColumn(new TableColumn("Bits").RightAligned()).AddColumn("Method").AddColumn("Coder");
        }

        foreach (var tensor in inspection.Tensors)
        {
            var cells = new List<string>
            {
                Markup.Escape(tensor.Name),
                string.Join(" x ", tensor.Shape),
                tensor.Params.ToString("N0", CultureInfo.InvariantCulture),
                tensor.Bytes.ToString("N0", CultureInfo.InvariantCulture),
                tensor.Op,
            };
            if (blob)
            {
                cells.AddRange([tensor.Bits?.ToString(CultureInfo.InvariantCulture) ?? "", tensor.Method ?? "", tensor.Coder ?? ""]);
            }

            table.AddRow(cells.ToArray());
        }

        var totals = new List<Spectre.Console.Rendering.IRenderable>
        {
            new Markup($"[bold]{inspection.Tensors.Count} tensors[/]"),
            Text.Empty,
            new Markup($"[bold]{inspection.Tensors.Sum(t => t.Params).ToString("N0", CultureInfo.InvariantCulture)}[/]"),
            new Markup($"[bold]{inspection.Tensors.Sum(t => t.Bytes).ToString("N0", CultureInfo.InvariantCulture)}[/]"),
            Text.Empty,
        };
        if (blob)
        {
            totals.AddRange([Text.Empty, Text.Empty, Text.Empty]);
        }

        table.AddRow(totals);
        output.Write(table);
    }
}
