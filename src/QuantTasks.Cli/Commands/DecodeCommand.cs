using System.CommandLine;
using QuantTasks.Inspection;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// <c>dotnet quant decode BLOB --out MODEL.onnx</c>: a plain float ONNX model with the dequantized weights, for
/// Netron, ONNX Runtime or any other tool. Its weights are the runtime's, bit for bit.
/// </summary>
internal static class DecodeCommand
{
    public static Command Create(CommandConsole console)
    {
        var blob = new Argument<string>("BLOB") { Description = "A QuantTasks blob (.qtblob)." };
        var output = new Option<string>("--out", "-o") { Description = "The ONNX file to write.", Required = true };
        var command = new Command("decode", "Write a blob's model as a plain float ONNX model with the dequantized weights.")
        {
            blob,
            output,
        };
        command.SetAction(parse =>
        {
            var path = parse.GetRequiredValue(blob);
            var model = BlobFiles.Decode(BlobFiles.Read(path), path);
            var target = parse.GetRequiredValue(output);
            AtomicFile.WriteAllBytes(target, model);
            console.Note($"Wrote {target} ({model.Length:N0} bytes).");
            return 0;
        });
        return command;
    }
}
