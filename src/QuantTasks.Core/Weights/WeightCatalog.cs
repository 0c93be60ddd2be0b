using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;

namespace QuantTasks.Weights;

/// <summary>Finds a model's quantizable weight tensors, as the product contract defines them.</summary>
internal static class WeightCatalog
{
    /// <summary>The quantizable weights in the order their first consumer appears in the graph.</summary>
    public static IReadOnlyList<WeightTensor> Find(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var graph = model.Graph;
        var stored = new Dictionary<string, (TensorProto Tensor, WeightStorage Storage)>(StringComparer.Ordinal);
        foreach (var init in graph.Initializer)
        {
            stored[init.Name] = (init, WeightStorage.Initializer);
        }

        // Exporters put an Identity between a shared weight and its consumers, and a Cast after weights stored in
        // float16; follow both back to the stored tensor, which is what gets quantized.
        var passThrough = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            if (node.OpType == "Constant" && node.Output.Count == 1)
            {
                var value = node.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
                if (value is not null)
                {
                    stored[node.Output[0]] = (value, WeightStorage.ConstantNode);
                }
            }
            else if (IsPassThrough(node))
            {
                passThrough[node.Output[0]] = node.Input[0];
            }
        }

        var found = new List<WeightTensor>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (var (inputIndex, axis) in WeightOperands(node))
            {
                if (inputIndex >= node.Input.Count)
                {
                    continue;
                }

                var name = node.Input[inputIndex];
                for (var hops = 0; hops < 16 && !stored.ContainsKey(name) && passThrough.TryGetValue(name, out var source); hops++)
                {
                    name = source;
                }

                if (!stored.TryGetValue(name, out var entry) || entry.Tensor.Dims.Count < 2
                    || !TensorValues.IsFloatingPoint(entry.Tensor.DataType) || !seen.Add(name))
                {
                    continue;
                }

                var rank = entry.Tensor.Dims.Count;
                var count = TensorValues.ElementCount(entry.Tensor);
                found.Add(new WeightTensor(
                    name,
                    entry.Tensor.Dims.ToArray(),
                    count,
                    count * TensorValues.ElementSize(entry.Tensor.DataType),
                    node.OpType,
                    entry.Storage,
                    entry.Tensor.DataType,
                    axis < 0 ? rank + axis : axis));
            }
        }

        return found;
    }

    private static bool IsPassThrough(NodeProto node) =>
        node.Input.Count == 1 && node.Output.Count == 1 && (node.OpType == "Identity"
            || (node.OpType == "Cast" && TensorValues.IsFloatingPoint((int)(node.Attribute.FirstOrDefault(a => a.Name == "to")?.I ?? 0))));

    // Which inputs of an op hold weights, and the output-channel axis of each (negative counts from the end).
    private static IEnumerable<(int Input, int Axis)> WeightOperands(NodeProto node)
    {
        if (!string.IsNullOrEmpty(node.Domain) && node.Domain != "ai.onnx")
        {
            yield break;
        }

        switch (node.OpType)
        {
            case "Conv":
                yield return (1, 0);
                break;
            case "ConvTranspose":
                yield return (1, 1);
                break;
            case "Gemm":
                var transB = node.Attribute.FirstOrDefault(a => a.Name == "transB")?.I ?? 0;
                yield return (1, transB != 0 ? 0 : 1);
                break;
            case "MatMul":
                // Either side may be the constant one; the right operand's columns are the outputs, the left
                // operand's rows are.
                yield return (1, -1);
                yield return (0, -2);
                break;
            case "Gather":
                yield return (0, 0);
                break;
            default:
                break;
        }
    }
}
