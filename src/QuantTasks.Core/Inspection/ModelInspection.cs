using QuantTasks.Onnx;
using QuantTasks.Weights;

namespace QuantTasks.Inspection;

/// <summary>A graph input: its name and shape, each dimension a number, a symbolic name, or null when unknown.</summary>
/// <param name="Name">The input's name.</param>
/// <param name="Shape">Dimensions: <see cref="long"/> values, <see cref="string"/> symbols, or null.</param>
internal sealed record InputSummary(string Name, IReadOnlyList<object?> Shape);

/// <summary>One quantizable weight tensor as <c>inspect</c> reports it.</summary>
/// <param name="Name">Initializer or <c>Constant</c> output name.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Params">Elements.</param>
/// <param name="Bytes">Stored bytes (in a blob: parameters, code tables and coded symbols).</param>
/// <param name="Op">The consuming op type.</param>
/// <param name="Bits">In a blob: bits per symbol (0 for float); absent for ONNX models.</param>
/// <param name="Method">In a blob: the quantizer; absent for ONNX models.</param>
/// <param name="Coder">In a blob: raw, fixed, huffman or zero-run-huffman; absent for ONNX models.</param>
internal sealed record TensorSummary(string Name, IReadOnlyList<long> Shape, long Params, long Bytes, string Op,
    int? Bits = null, string? Method = null, string? Coder = null);

/// <summary>What <c>dotnet quant inspect</c> reports about a model; serializes to the contract's JSON.</summary>
/// <param name="Path">The file inspected.</param>
/// <param name="Format"><c>onnx</c> or <c>blob</c>.</param>
/// <param name="Opset">The default-domain opset.</param>
/// <param name="Inputs">Graph inputs that are not initializers.</param>
/// <param name="Tensors">The quantizable weights.</param>
internal sealed record ModelInspection(
    string Path,
    string Format,
    long Opset,
    IReadOnlyList<InputSummary> Inputs,
    IReadOnlyList<TensorSummary> Tensors)
{
    /// <summary>Summarizes an ONNX model.</summary>
    public static ModelInspection Of(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var initializers = model.Graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = model.Graph.Input
            .Where(i => !initializers.Contains(i.Name))
            .Select(i => new InputSummary(i.Name, ShapeOf(i)))
            .ToArray();
        var tensors = WeightCatalog.Find(model)
            .Select(w => new TensorSummary(w.Name, w.Shape, w.Params, w.Bytes, w.Op))
            .ToArray();
        return new ModelInspection(model.Path, "onnx", model.Opset, inputs, tensors);
    }

    /// <summary>Summarizes a blob: the graph's opset and inputs, and each stored tensor with its coding.</summary>
    public static ModelInspection Of(Runtime.QuantBlob blob, string path)
    {
        ArgumentNullException.ThrowIfNull(blob);
        var model = Onnx.Proto.ModelProto.Parser.ParseFrom(blob.Graph);
        var opset = model.OpsetImport.FirstOrDefault(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx")?.Version ?? 0;
        var stored = blob.Tensors.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var initializers = model.Graph.Initializer.Select(i => i.Name).Concat(stored).ToHashSet(StringComparer.Ordinal);
        var inputs = model.Graph.Input
            .Where(i => !initializers.Contains(i.Name))
            .Select(i => new InputSummary(i.Name, ShapeOf(i)))
            .ToArray();
        var tensors = blob.Tensors.Select(t => new TensorSummary(
            t.Name,
            t.Shape,
            t.Elements,
            t.PayloadBytes,
            model.Graph.Node.FirstOrDefault(n => n.Input.Contains(t.Name))?.OpType ?? "",
            t.Bits,
            t.Method,
            t.Coder)).ToArray();
        return new ModelInspection(path, "blob", opset, inputs, tensors);
    }

    private static object?[] ShapeOf(Onnx.Proto.ValueInfoProto value)
    {
        var shape = value.Type?.TensorType?.Shape;
        if (shape is null)
        {
            return [];
        }

        return shape.Dim.Select(d => d.ValueCase switch
        {
            Onnx.Proto.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => (object?)d.DimValue,
            Onnx.Proto.TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => d.DimParam,
            _ => null,
        }).ToArray();
    }
}
