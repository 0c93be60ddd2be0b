using QuantTasks.Onnx.Proto;

namespace QuantTasks.Evaluation;

/// <summary>
/// The part of a graph that one weight reaches on its way to an output: the nodes that read the weight, or read a
/// value computed from it, and that the output depends on. Nothing outside the part changes when the weight does,
/// so the values the part reads from the rest of the graph (its frontier) can be computed once, and each of the
/// weight's candidates runs the part alone: for a layer halfway down a network, half a forward pass.
/// </summary>
internal sealed class AffectedGraph
{
    private AffectedGraph(string weight, string output, NodeProto[] nodes, string[] frontier, string[] dataInputs, int graphNodes)
    {
        Weight = weight;
        Output = output;
        Nodes = nodes;
        Frontier = frontier;
        DataInputs = dataInputs;
        GraphNodes = graphNodes;
    }

    /// <summary>The weight (an initializer).</summary>
    public string Weight { get; }

    /// <summary>The output the part computes.</summary>
    public string Output { get; }

    /// <summary>The part's nodes in graph order, with the <c>Constant</c> nodes whose values they read.</summary>
    public IReadOnlyList<NodeProto> Nodes { get; }

    /// <summary>Values the part reads that other nodes compute: computed once, fed to every run of the part.</summary>
    public IReadOnlyList<string> Frontier { get; }

    /// <summary>Graph inputs (the data) the part reads directly.</summary>
    public IReadOnlyList<string> DataInputs { get; }

    /// <summary>Nodes in the whole graph, for the share the part saves.</summary>
    public int GraphNodes { get; }

    /// <summary>
    /// The part of <paramref name="graph"/> between <paramref name="weight"/> and <paramref name="output"/>; null when
    /// it would save nothing (the weight's first reader reads only graph inputs: the part is the whole graph), when
    /// the output does not depend on the weight, or when the graph has subgraphs (If, Loop, Scan), whose nodes can
    /// read any outer value and so hide dependencies from this scan.
    /// </summary>
    public static AffectedGraph? Find(GraphProto graph, string weight, string output)
    {
        ArgumentNullException.ThrowIfNull(graph);
        if (graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
        {
            return null;
        }

        // ONNX keeps nodes in topological order, so one pass finds every value computed from the weight.
        var reached = new HashSet<string>(StringComparer.Ordinal) { weight };
        var affected = new List<int>();
        for (var i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            if (node.Input.Any(reached.Contains))
            {
                affected.Add(i);
                foreach (var o in node.Output.Where(o => o.Length > 0))
                {
                    reached.Add(o);
                }
            }
        }

        if (!reached.Contains(output) || output == weight)
        {
            return null;
        }

        // Backwards from the output: only affected nodes the output needs (a side branch to another output is left out).
        var needed = new HashSet<string>(StringComparer.Ordinal) { output };
        var kept = new List<int>();
        for (var k = affected.Count - 1; k >= 0; k--)
        {
            var node = graph.Node[affected[k]];
            if (node.Output.Any(needed.Contains))
            {
                kept.Add(affected[k]);
                foreach (var input in node.Input.Where(i => i.Length > 0))
                {
                    needed.Add(input);
                }
            }
        }

        kept.Reverse();
        var produced = kept.SelectMany(i => graph.Node[i].Output).ToHashSet(StringComparer.Ordinal);
        var initializers = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var graphInputs = graph.Input.Select(i => i.Name).Where(n => !initializers.Contains(n)).ToHashSet(StringComparer.Ordinal);
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < graph.Node.Count; i++)
        {
            foreach (var o in graph.Node[i].Output.Where(o => o.Length > 0))
            {
                producer[o] = i;
            }
        }

        var constants = new SortedSet<int>();
        var frontier = new List<string>();
        var dataInputs = new List<string>();
        foreach (var input in kept.SelectMany(i => graph.Node[i].Input).Where(i => i.Length > 0 && !produced.Contains(i)).Distinct(StringComparer.Ordinal))
        {
            if (initializers.Contains(input))
            {
                continue;
            }

            if (graphInputs.Contains(input))
            {
                dataInputs.Add(input);
            }
            else if (producer.TryGetValue(input, out var p) && graph.Node[p].OpType == "Constant" && graph.Node[p].Domain is "" or "ai.onnx")
            {
                constants.Add(p);
            }
            else
            {
                frontier.Add(input);
            }
        }

        if (frontier.Count == 0)
        {
            return null;
        }

        var nodes = constants.Concat(kept).Order().Select(i => graph.Node[i]).ToArray();
        return new AffectedGraph(weight, output, nodes, frontier.ToArray(), dataInputs.ToArray(), graph.Node.Count);
    }

    /// <summary>
    /// The part as a model of its own: the frontier and the data it reads are its inputs (typed by
    /// <paramref name="frontierTypes"/>), the weight an overridable initializer (an input with its stored values as
    /// default), the output its only output.
    /// </summary>
    public ModelProto Build(ModelProto model, IReadOnlyDictionary<string, TypeProto> frontierTypes)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(frontierTypes);
        var source = model.Graph;
        var part = new GraphProto { Name = source.Name + "_from_" + Weight };
        part.Node.AddRange(Nodes.Select(n => n.Clone()));
        var read = Nodes.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        part.Initializer.AddRange(source.Initializer.Where(t => read.Contains(t.Name)).Select(t => t.Clone()));
        part.SparseInitializer.AddRange(source.SparseInitializer.Where(t => read.Contains(t.Values?.Name ?? "")).Select(t => t.Clone()));
        var declared = source.Input.ToDictionary(i => i.Name, StringComparer.Ordinal);
        foreach (var name in DataInputs)
        {
            part.Input.Add(declared[name].Clone());
        }

        foreach (var name in Frontier)
        {
            part.Input.Add(new ValueInfoProto { Name = name, Type = frontierTypes[name].Clone() });
        }

        var weight = source.Initializer.First(t => t.Name == Weight);
        var type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = weight.DataType, Shape = new TensorShapeProto() } };
        type.TensorType.Shape.Dim.AddRange(weight.Dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        part.Input.Add(new ValueInfoProto { Name = Weight, Type = type });
        part.Output.Add(source.Output.FirstOrDefault(o => o.Name == Output)?.Clone() ?? new ValueInfoProto { Name = Output });

        var result = new ModelProto
        {
            IrVersion = Math.Max(model.IrVersion, 4), // overridable initializers: IR 4 and later
            ProducerName = model.ProducerName,
            ProducerVersion = model.ProducerVersion,
            Domain = model.Domain,
            ModelVersion = model.ModelVersion,
            Graph = part,
        };
        result.OpsetImport.AddRange(model.OpsetImport.Select(o => o.Clone()));
        result.Functions.AddRange(model.Functions.Select(f => f.Clone()));
        return result;
    }
}
