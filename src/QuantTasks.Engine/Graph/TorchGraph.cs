using QuantTasks.Diagnostics;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Weights;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Graph;

/// <summary>
/// An ONNX graph run as TorchSharp operations: the quantizable weights are leaf tensors that require gradients,
/// every other initializer and <c>Constant</c> is a constant, and the nodes run in graph order. Differentiating
/// a loss of the outputs twice gives Hessian-vector products with respect to the weights.
/// </summary>
internal sealed class TorchGraph : IDisposable
{
    private readonly GraphProto _graph;
    private readonly long _opset;
    private readonly Dictionary<string, Tensor> _constants;
    private readonly (WeightTensor Weight, Tensor Parameter)[] _weights;
    private IDisposable? _kernels;
    private List<string>[]? _lastReaders;

    private TorchGraph(GraphProto graph, long opset, Dictionary<string, Tensor> constants, (WeightTensor, Tensor)[] weights, string[] inputs)
    {
        _graph = graph;
        _opset = opset;
        _constants = constants;
        _weights = weights;
        InputNames = inputs;
    }

    /// <summary>The weights, in catalog order, with the leaf tensor standing for each.</summary>
    public IReadOnlyList<(WeightTensor Weight, Tensor Parameter)> Weights => _weights;

    /// <summary>The leaf tensors alone, in catalog order.</summary>
    public IReadOnlyList<Tensor> Parameters => _weights.Select(w => w.Parameter).ToArray();

    /// <summary>Graph inputs that are not initializers: what a batch feeds.</summary>
    public IReadOnlyList<string> InputNames { get; }

    /// <summary>What produces a graph output (for the losses that compare it).</summary>
    public OutputForm DescribeOutput(string output) => OutputForm.Of(_graph, _opset, output);

    /// <summary>The graph's outputs, in order.</summary>
    public IReadOnlyList<string> OutputNames => _graph.Output.Select(o => o.Name).ToArray();

    /// <summary>
    /// Compiles a model. Every node's operator is checked first, so that a model with unsupported operators fails
    /// before any work, with one error that lists them all.
    /// </summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.UnsupportedOperator"/>, listing every unsupported op and node.</exception>
    public static TorchGraph Compile(OnnxModel model, IReadOnlyList<WeightTensor> weights, Device device)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(weights);
        CheckSupported(model);

        var weightNames = weights.Select(w => w.Name).ToHashSet(StringComparer.Ordinal);
        var constants = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var parameters = new List<(WeightTensor, Tensor)>();
        try
        {
            foreach (var init in model.Graph.Initializer.Where(i => !weightNames.Contains(i.Name)))
            {
                if (TorchTensors.ScalarTypeOf(init.DataType) is not null)
                {
                    constants[init.Name] = TorchTensors.FromProto(init, device);
                }
            }

            foreach (var weight in weights)
            {
                var stored = model.FindTensor(weight.Name)!;
                var leaf = tensor(model.ReadFloats(stored), weight.Shape.ToArray(), ScalarType.Float32).to(device).requires_grad_(true);
                parameters.Add((weight, leaf));
            }

            var initializerNames = model.Graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
            var inputs = model.Graph.Input.Select(i => i.Name).Where(n => !initializerNames.Contains(n)).ToArray();
            return new TorchGraph(model.Graph, model.Opset, constants, parameters.ToArray(), inputs)
            {
                // Last, after everything that can fail: the graph now holds the kernel choice until disposed.
                _kernels = OneDnn.Choose(NeedsNativeConvolutions(model)),
            };
        }
        catch
        {
            foreach (var t in constants.Values.Concat(parameters.Select(p => p.Item2)))
            {
                t.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Whether a convolution of the graph is of the kind whose oneDNN gradients were found wrong (see
    /// <see cref="OneDnn"/>): a stride above 1, an even kernel side, or a kernel whose shape is not known here.
    /// </summary>
    internal static bool NeedsNativeConvolutions(OnnxModel model)
    {
        foreach (var node in model.Graph.Node.Where(n => n.OpType is "Conv" or "ConvTranspose"))
        {
            var attributes = node.Attribute.ToDictionary(a => a.Name, StringComparer.Ordinal);
            if (attributes.TryGetValue("strides", out var strides) && strides.Ints.Any(s => s > 1))
            {
                return true;
            }

            var kernel = attributes.TryGetValue("kernel_shape", out var shape) ? shape.Ints.ToArray()
                : node.Input.Count > 1 && model.FindTensor(node.Input[1]) is { Dims.Count: > 2 } weight ? weight.Dims.Skip(2).ToArray()
                : null;
            if (kernel is null || kernel.Any(k => k % 2 == 0))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Runs the graph on a batch and returns the requested outputs.</summary>
    /// <param name="inputs">Tensors for <see cref="InputNames"/>.</param>
    /// <param name="outputs">Names of the values to return.</param>
    /// <param name="initializers">
    /// Values that replace weights or other initializers of the same name for this pass (fine-tuning computes each
    /// weight from its trained levels); null for the graph's own.
    /// </param>
    public Tensor[] Forward(IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyList<string> outputs, IReadOnlyDictionary<string, Tensor>? initializers = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(outputs);
        var values = new Dictionary<string, Tensor>(_constants, StringComparer.Ordinal);
        foreach (var (weight, parameter) in _weights)
        {
            values[weight.Name] = parameter;
        }

        foreach (var (name, value) in initializers ?? new Dictionary<string, Tensor>())
        {
            values[name] = value;
        }

        foreach (var (name, value) in inputs)
        {
            values[name] = value;
        }

        // What the caller owns (and the graph's own leaves and constants) is never freed here; of the values the
        // nodes make, a handle is released once the last node that reads it has run, unless it is an output or
        // another name still holds the same tensor (an op may hand an input back). Autograd keeps what a backward
        // pass needs through its own references, so releasing the handles frees only what nothing needs: before,
        // every value and every op's temporaries lived until the caller's dispose scope ended (a recognizer's
        // training step held about half a gigabyte per sample).
        var owned = new HashSet<Tensor>(values.Values, ReferenceEqualityComparer.Instance);
        var kept = new HashSet<string>(outputs, StringComparer.Ordinal);
        var holders = new Dictionary<Tensor, int>(ReferenceEqualityComparer.Instance);
        var lastReaders = LastReaders();
        for (var n = 0; n < _graph.Node.Count; n++)
        {
            var node = _graph.Node[n];
            if (node.OpType == "Constant" && node.Output.Count == 1 && values.ContainsKey(node.Output[0]))
            {
                continue; // a weight held in a Constant node: already a leaf.
            }

            var arguments = node.Input.Select(name => name.Length == 0 ? null : Lookup(values, name, node)).ToArray();
            OpRegistry.TryGet(node.OpType, out var implementation);
            var context = new OpContext(node, arguments, _opset);
            Tensor[] results;
            using (var scope = NewDisposeScope())
            {
                // The op's temporaries go when it returns; its results join the caller's scope.
                results = implementation(context);
                scope.MoveToOuter(results.Where(r => r is not null));
            }

            for (var i = 0; i < node.Output.Count && i < results.Length; i++)
            {
                if (node.Output[i].Length > 0 && results[i] is { } result)
                {
                    values[node.Output[i]] = result;
                    holders[result] = holders.GetValueOrDefault(result) + 1;
                }
            }

            foreach (var name in lastReaders[n])
            {
                if (kept.Contains(name) || !values.TryGetValue(name, out var value) || owned.Contains(value) || !holders.ContainsKey(value))
                {
                    continue;
                }

                values.Remove(name);
                if (--holders[value] == 0)
                {
                    holders.Remove(value);
                    value.Dispose();
                }
            }
        }

        return outputs.Select(name => values.TryGetValue(name, out var value)
            ? value
            : throw new QuantException(ErrorCode.OnnxInvalidModel, $"The graph has no value named '{name}'.")).ToArray();
    }

    // Per node, the values whose last reader it is (graph outputs are read by the caller, not released here).
    private List<string>[] LastReaders()
    {
        if (_lastReaders is { } known)
        {
            return known;
        }

        var last = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var n = 0; n < _graph.Node.Count; n++)
        {
            foreach (var name in _graph.Node[n].Input.Where(i => i.Length > 0))
            {
                last[name] = n;
            }
        }

        var readers = Enumerable.Range(0, _graph.Node.Count).Select(_ => new List<string>()).ToArray();
        foreach (var (name, n) in last)
        {
            readers[n].Add(name);
        }

        return _lastReaders = readers;
    }

    public void Dispose()
    {
        _kernels?.Dispose();
        _kernels = null;
        foreach (var t in _constants.Values)
        {
            t.Dispose();
        }

        foreach (var (_, parameter) in _weights)
        {
            parameter.Dispose();
        }
    }

    private static Tensor Lookup(Dictionary<string, Tensor> values, string name, NodeProto node) =>
        values.TryGetValue(name, out var value)
            ? value
            : throw new QuantException(ErrorCode.OnnxInvalidModel,
                $"{node.OpType} node '{node.Name}' reads '{name}', which no earlier node, input or initializer produces. The graph is not in topological order or is damaged.");

    private static void CheckSupported(OnnxModel model)
    {
        var unsupported = model.Graph.Node
            .Where(n => (!string.IsNullOrEmpty(n.Domain) && n.Domain != "ai.onnx") || !OpRegistry.TryGet(n.OpType, out _))
            .Select(n => (Op: string.IsNullOrEmpty(n.Domain) ? n.OpType : $"{n.Domain}.{n.OpType}", Node: string.IsNullOrEmpty(n.Name) ? n.Output.FirstOrDefault() ?? "?" : n.Name))
            .ToArray();
        if (unsupported.Length == 0)
        {
            return;
        }

        var list = string.Join("; ", unsupported.GroupBy(u => u.Op).Select(g => $"{g.Key} ({string.Join(", ", g.Select(u => u.Node).Take(5))}{(g.Count() > 5 ? $" and {g.Count() - 5} more" : "")})"));
        throw new QuantException(ErrorCode.UnsupportedOperator,
            $"The Hessian analysis cannot run this model: {unsupported.Length} node(s) use operators it does not support: {list}. "
            + "Set sensitivity.method: none to quantize without the analysis.",
            new SourceLocation(model.Path));
    }
}
