using System.Collections.Concurrent;
using Google.Protobuf;
using QuantTasks.Data;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Weights;

namespace QuantTasks.Compensation;

/// <summary>
/// One layer's reconstruction Hessian H = sum over samples (and output positions) of x x^T, x the layer's input
/// as the weight sees it: the row of a Gemm or MatMul input, or a convolution's patch (input channels of one
/// group x kernel positions, the order of the weight's own elements). A convolution with groups has one H per
/// group. Accumulated in float64.
/// </summary>
/// <param name="Weight">The weight's name.</param>
/// <param name="Rows">Output channels.</param>
/// <param name="Columns">Input features per group.</param>
/// <param name="Groups">Convolution groups (1 otherwise); output channel r belongs to group r / (Rows / Groups).</param>
/// <param name="Transposed">Whether the weight stores [inputs, outputs] (MatMul, Gemm without transB), so the compensation works on its transpose.</param>
/// <param name="PerGroup">H per group, Columns x Columns.</param>
/// <param name="Vectors">How many input vectors were accumulated.</param>
internal sealed record LayerHessian(string Weight, int Rows, int Columns, int Groups, bool Transposed, SymmetricMatrix[] PerGroup, long Vectors)
{
    // One factorisation per group and setting, shared by every candidate of the search (the O(n^3) part).
    private readonly ConcurrentDictionary<(int Group, double Dampening, ColumnOrder Order), Lazy<LayerFactor>> _factors = new();

    /// <summary>The factorisation of group <paramref name="group"/> for <paramref name="options"/>, computed once.</summary>
    /// <exception cref="NotPositiveDefiniteException">H stays singular after dampening.</exception>
    public LayerFactor Factor(int group, CompensationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return _factors.GetOrAdd((group, options.Dampening, options.Order),
            key => new Lazy<LayerFactor>(() => OptimalBrainCompensation.Factorize(PerGroup[key.Group], options))).Value;
    }

    /// <summary>
    /// Drops the cached factorisations (n x n each) and, when H is spilled, its in-memory copy: the search calls this
    /// once a tensor's candidates are done, so a large network holds neither every U nor (spilled) every H at once;
    /// the chosen candidate reads and factorises again.
    /// </summary>
    public void ReleaseMemory()
    {
        _factors.Clear();
        foreach (var matrix in PerGroup)
        {
            matrix.Release();
        }
    }

    /// <summary>The bytes H takes in memory, all groups.</summary>
    public long Bytes => PerGroup.Sum(m => m.Bytes);

    /// <summary>Moves H to <paramref name="file"/>; it is read back when used (see <see cref="SymmetricMatrix.SpillTo"/>).</summary>
    /// <exception cref="IOException">The file cannot be written; what was not written stays in memory.</exception>
    public void SpillTo(SpillFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        foreach (var matrix in PerGroup)
        {
            matrix.SpillTo(file);
        }
    }

    /// <summary>The bytes one setting's factorisation holds: an n x n float64 matrix per group.</summary>
    public long FactorBytes => (long)Groups * Columns * Columns * sizeof(double);

    /// <summary>The layer's output error sum_r (w_r - q_r)^T H (w_r - q_r), with both tensors in their stored layout.</summary>
    public double OutputError(float[] original, float[] rounded)
    {
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(rounded);
        var perGroup = Rows / Groups;
        double total = 0;
        for (var g = 0; g < Groups; g++)
        {
            var firstRow = g * perGroup;
            total += PerGroup[g].QuadraticForms(perGroup, (first, count, target) =>
            {
                for (var r = 0; r < count; r++)
                {
                    var row = firstRow + first + r;
                    for (var j = 0; j < Columns; j++)
                    {
                        var index = Transposed ? (j * Rows) + row : (row * Columns) + j;
                        target[(r * Columns) + j] = (double)original[index] - rounded[index];
                    }
                }
            });
        }

        return total;
    }
}

/// <summary>How <see cref="LayerHessians.Compute"/> bounds the sums it holds at once.</summary>
/// <param name="MaxHeldBytes">Most bytes of sums one pass over the samples holds (a larger layer gets a pass of its own).</param>
/// <param name="Finished">Takes each layer's Hessian as soon as its pass is done (the activations stage moves it to a scratch file).</param>
internal sealed record HessianPasses(long MaxHeldBytes, Action<LayerHessian> Finished);

/// <summary>Computes the layer Hessians of a model's weights from its activations on calibration samples, by ONNX Runtime.</summary>
internal static class LayerHessians
{
    /// <summary>
    /// Every weight consumed as the weight input of a Gemm, MatMul (2-D) or Conv gets its H; other weights are left
    /// out (they are rounded without compensation). The float model's activations are used, streamed batch by batch.
    /// </summary>
    /// <param name="model">The float model.</param>
    /// <param name="weights">The weights whose layers are measured.</param>
    /// <param name="data">Calibration samples (no labels needed).</param>
    /// <param name="samples">How many of them.</param>
    /// <param name="batchSize">Samples per ONNX Runtime run.</param>
    /// <param name="replaced">Float32 tensors whose values are replaced first (the quantized layers before, for sequential compensation), or null.</param>
    /// <param name="passes">
    /// How much of the sums one pass over the samples may hold, and what becomes of each finished layer (a scratch
    /// file); null: one pass, every layer's sums held until the end.
    /// </param>
    /// <param name="maxActivationBytes">Most bytes of layer inputs one batch hands over (<see cref="MaxActivationBytes"/>).</param>
    /// <param name="cancellation">Stops between batches.</param>
    public static IReadOnlyDictionary<string, LayerHessian> Compute(OnnxModel model, IReadOnlyList<WeightTensor> weights, DataFile data,
        int samples, int batchSize = 32, IReadOnlyDictionary<string, float[]>? replaced = null, HessianPasses? passes = null,
        long maxActivationBytes = MaxActivationBytes, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(weights);
        var layers = weights.Select(w => Layer.Find(model, w)).OfType<Layer>().ToArray();
        var computed = new Dictionary<string, LayerHessian>(StringComparer.Ordinal);
        if (layers.Length == 0)
        {
            return computed;
        }

        // The layers' inputs become extra graph outputs of a copy of the model (one that shares its tensors).
        var proto = OnnxModel.ShallowCopy(model.Proto);
        foreach (var (name, values) in replaced ?? new Dictionary<string, float[]>())
        {
            OnnxModel.ReplaceFloatValues(proto.Graph, name, values);
        }

        var groups = Groups(layers, passes?.MaxHeldBytes ?? long.MaxValue);
        var batch = batchSize;
        if (groups.Count > 1)
        {
            // Every pass adds each layer's sums in the batches a single pass over all layers would use (the first
            // sample alone, then batches sized by all the layers' inputs), so the sums do not depend on the grouping.
            long perSample = 0;
            var all = layers.Select(l => l.Input).Distinct(StringComparer.Ordinal).ToArray();
            ModelEvaluator.Stream(WithOutputs(proto, all).ToByteArray(), data, all, model.Path, samples: 1, batchSize,
                first => perSample = first.Values.Sum(v => (long)v.Values.Length * sizeof(float)), cancellation: cancellation);
            batch = (int)Math.Clamp(maxActivationBytes / Math.Max(1, perSample), 1, batchSize);
        }

        foreach (var group in groups)
        {
            var names = group.Select(l => l.Input).Distinct(StringComparer.Ordinal).ToArray();
            var pass = groups.Count > 1 ? Prefix(proto, names) : WithOutputs(proto, names);
            var grams = group.Select(l => Enumerable.Range(0, l.Groups).Select(_ => new SymmetricMatrix(l.Columns)).ToArray()).ToArray();
            var vectors = new long[group.Length];
            var scratch = new ConcurrentBag<GramScratch>();
            ModelEvaluator.Stream(pass.ToByteArray(), data, names, model.Path, samples, batch, values =>
            {
                // Each layer owns its own sums, so layers accumulate in parallel; batches come in order.
                Parallel.For(0, group.Length, new ParallelOptions { CancellationToken = cancellation }, i =>
                {
                    var (floats, shape) = values[group[i].Input];
                    vectors[i] += group[i].Accumulate(floats, shape, grams[i], scratch);
                });
            }, maxActivationBytes, cancellation);

            for (var i = 0; i < group.Length; i++)
            {
                var layer = group[i];
                var hessian = new LayerHessian(layer.Weight.Name, layer.Rows, layer.Columns, layer.Groups, layer.Transposed, grams[i], vectors[i]);
                passes?.Finished(hessian);
                computed[layer.Weight.Name] = hessian;
            }
        }

        return layers.ToDictionary(l => l.Weight.Name, l => computed[l.Weight.Name], StringComparer.Ordinal);
    }

    /// <summary>The bytes the sums of these weights' layer Hessians take in memory.</summary>
    public static long Bytes(OnnxModel model, IEnumerable<WeightTensor> weights)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(weights);
        return weights.Select(w => Layer.Find(model, w)).OfType<Layer>().Sum(l => l.Bytes);
    }

    // The layers in graph order, in runs whose sums take at most maxBytes (a larger layer alone): one pass each.
    private static List<Layer[]> Groups(Layer[] layers, long maxBytes)
    {
        var groups = new List<Layer[]>();
        var current = new List<Layer>();
        long bytes = 0;
        foreach (var layer in layers.OrderBy(l => l.Position))
        {
            if (current.Count > 0 && bytes + layer.Bytes > maxBytes)
            {
                groups.Add([.. current]);
                (current, bytes) = ([], 0);
            }

            current.Add(layer);
            bytes += layer.Bytes;
        }

        groups.Add([.. current]);
        return groups;
    }

    // The copy with the values as extra outputs.
    private static ModelProto WithOutputs(ModelProto proto, IReadOnlyList<string> names)
    {
        var copy = OnnxModel.ShallowCopy(proto);
        var existing = new HashSet<string>(copy.Graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        foreach (var name in names.Where(n => !existing.Contains(n)))
        {
            copy.Graph.Output.Add(FloatOutput(name));
        }

        return copy;
    }

    // The copy cut down to what the values need, with them as its only outputs: a pass over early layers runs only
    // the start of the network and carries only its weights. A graph with subgraphs (If, Loop, Scan) keeps every
    // node, since a body may read outer values its node does not list; so do initializers listed as graph inputs.
    private static ModelProto Prefix(ModelProto proto, IReadOnlyList<string> names)
    {
        var copy = OnnxModel.ShallowCopy(proto);
        var graph = copy.Graph;
        var outputs = graph.Output.ToDictionary(o => o.Name, StringComparer.Ordinal);
        graph.Output.Clear();
        graph.Output.AddRange(names.Select(n => outputs.GetValueOrDefault(n) ?? FloatOutput(n)));
        if (graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
        {
            return copy;
        }

        var needed = new HashSet<string>(names, StringComparer.Ordinal);
        var kept = new List<NodeProto>();
        for (var i = graph.Node.Count - 1; i >= 0; i--)
        {
            var node = graph.Node[i];
            if (node.Output.Any(needed.Contains))
            {
                kept.Add(node);
                needed.UnionWith(node.Input.Where(input => input.Length > 0));
            }
        }

        kept.Reverse();
        graph.Node.Clear();
        graph.Node.AddRange(kept);
        var inputs = new HashSet<string>(graph.Input.Select(i => i.Name), StringComparer.Ordinal);
        var initializers = graph.Initializer.Where(t => needed.Contains(t.Name) || inputs.Contains(t.Name)).ToArray();
        graph.Initializer.Clear();
        graph.Initializer.AddRange(initializers);
        return copy;
    }

    private static ValueInfoProto FloatOutput(string name) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } };

    /// <summary>
    /// The weights that have a layer Hessian, in the order their consumers appear in the graph (ONNX requires
    /// nodes in topological order, so every layer comes after the layers that feed it).
    /// </summary>
    public static IReadOnlyList<WeightTensor> InGraphOrder(OnnxModel model, IEnumerable<WeightTensor> weights)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(weights);
        var position = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = model.Graph.Node.Count - 1; i >= 0; i--)
        {
            var node = model.Graph.Node[i];
            if (node.Input.Count >= 2 && node.OpType is "Gemm" or "MatMul" or "Conv")
            {
                position[node.Input[1]] = i;
            }
        }

        return weights.Where(w => Layer.Find(model, w) is not null).OrderBy(w => position[w.Name]).ThenBy(w => w.Name, StringComparer.Ordinal).ToArray();
    }

    /// <summary>How a weight's consumer turns its input into vectors x.</summary>
    private sealed class Layer
    {
        private Layer(WeightTensor weight, string input, int rows, int columns, int groups, bool transposed, NodeProto node, int position)
        {
            Position = position;
            Weight = weight;
            Input = input;
            Rows = rows;
            Columns = columns;
            Groups = groups;
            Transposed = transposed;
            Node = node;
        }

        public WeightTensor Weight { get; }

        /// <summary>Where its node is in the graph.</summary>
        public int Position { get; }

        /// <summary>The bytes its sums take.</summary>
        public long Bytes => Groups * SymmetricMatrix.BytesFor(Columns);

        public string Input { get; }

        public int Rows { get; }

        public int Columns { get; }

        public int Groups { get; }

        public bool Transposed { get; }

        private NodeProto Node { get; }

        public static Layer? Find(OnnxModel model, WeightTensor weight)
        {
            var position = model.Graph.Node.ToList().FindIndex(n => n.Input.Count >= 2 && n.Input[1] == weight.Name && n.OpType is "Gemm" or "MatMul" or "Conv");
            if (position < 0 || weight.Shape.Any(d => d <= 0))
            {
                return null;
            }

            var node = model.Graph.Node[position];

            var shape = weight.Shape;
            switch (node.OpType)
            {
                case "Gemm" when shape.Count == 2 && Int(node, "transA", 0) == 0:
                    var transB = Int(node, "transB", 0) == 1;
                    return new Layer(weight, node.Input[0], (int)(transB ? shape[0] : shape[1]), (int)(transB ? shape[1] : shape[0]), 1, !transB, node, position);
                case "MatMul" when shape.Count == 2:
                    return new Layer(weight, node.Input[0], (int)shape[1], (int)shape[0], 1, transposed: true, node, position);
                case "Conv" when shape.Count is 3 or 4:
                    var groups = (int)Int(node, "group", 1);
                    var kernel = shape.Skip(2).Aggregate(1L, (a, b) => a * b);
                    return shape[0] % groups == 0 ? new Layer(weight, node.Input[0], (int)shape[0], (int)(shape[1] * kernel), groups, false, node, position) : null;
                default:
                    return null;
            }
        }

        /// <summary>Adds this batch's x x^T into <paramref name="grams"/>; returns how many vectors x it held.</summary>
        public long Accumulate(float[] values, long[] shape, SymmetricMatrix[] grams, ConcurrentBag<GramScratch> pool)
        {
            var scratch = pool.TryTake(out var free) && free.Capacity >= Columns ? free : new GramScratch(Columns);
            try
            {
                return Accumulate(values, shape, grams, scratch);
            }
            finally
            {
                pool.Add(scratch);
            }
        }

        private long Accumulate(float[] values, long[] shape, SymmetricMatrix[] grams, GramScratch scratch)
        {
            if (Node.OpType != "Conv")
            {
                // Every leading index is one vector of Columns inputs.
                var count = values.Length / Columns;
                AddRows(grams[0], values, 0, count, Columns, Columns, scratch);
                return count;
            }

            return AccumulatePatches(values, shape, grams, scratch);
        }

        // im2col, one output position at a time: the patch of each group is a vector of (channel, kernel offset).
        private long AccumulatePatches(float[] values, long[] shape, SymmetricMatrix[] grams, GramScratch scratch)
        {
            var spatial = shape.Length - 2;
            var kernel = Weight.Shape.Skip(2).Select(d => (int)d).ToArray();
            var strides = Ints(Node, "strides", spatial, 1);
            var dilations = Ints(Node, "dilations", spatial, 1);
            var input = shape.Skip(2).Select(d => (int)d).ToArray();
            var pads = Pads(Node, spatial, input, kernel, strides, dilations);
            var outputSize = Enumerable.Range(0, spatial)
                .Select(a => ((input[a] + pads[a] + pads[a + spatial] - (dilations[a] * (kernel[a] - 1)) - 1) / strides[a]) + 1)
                .ToArray();
            int batch = (int)shape[0], channels = (int)shape[1];
            var perGroup = channels / Groups;
            var kernelSize = kernel.Aggregate(1, (a, b) => a * b);
            var positions = outputSize.Aggregate(1, (a, b) => a * b);
            var inputSize = input.Aggregate(1, (a, b) => a * b);
            var patch = scratch.Patch;
            var offsets = Enumerable.Range(0, kernelSize).Select(k => Unravel(k, kernel)).ToArray();
            long count = 0;
            for (var g = 0; g < Groups; g++)
            {
                var filled = 0;
                for (var n = 0; n < batch; n++)
                {
                    for (var p = 0; p < positions; p++)
                    {
                        var o = Unravel(p, outputSize);
                        var at = filled * Columns;
                        for (var c = 0; c < perGroup; c++)
                        {
                            var plane = ((long)n * channels + (g * perGroup) + c) * inputSize;
                            for (var k = 0; k < kernelSize; k++)
                            {
                                var offset = offsets[k];
                                var index = 0L;
                                var inside = true;
                                for (var a = 0; a < spatial && inside; a++)
                                {
                                    var coordinate = (o[a] * strides[a]) - pads[a] + (offset[a] * dilations[a]);
                                    inside = coordinate >= 0 && coordinate < input[a];
                                    index = (index * input[a]) + coordinate;
                                }

                                patch[at + (c * kernelSize) + k] = inside ? values[plane + index] : 0;
                            }
                        }

                        if (++filled == RowsPerProduct)
                        {
                            AddRows(grams[g], patch, 0, filled, Columns, Columns, scratch);
                            filled = 0;
                        }
                    }
                }

                AddRows(grams[g], patch, 0, filled, Columns, Columns, scratch);
                count = (long)batch * positions;
            }

            return count;
        }

        private static int[] Unravel(int index, int[] dims)
        {
            var result = new int[dims.Length];
            for (var a = dims.Length - 1; a >= 0; a--)
            {
                result[a] = index % dims[a];
                index /= dims[a];
            }

            return result;
        }
    }

    /// <summary>
    /// The layers' inputs of one batch may take this much (ONNX Runtime holds them as graph outputs, and they are
    /// copied once more for the Gram sums): the batch size shrinks to fit, down to one sample, so large images do
    /// not multiply the peak memory. ResNet-50's 54 layer inputs take about 30 MB per image of 224 x 224, so this
    /// runs two at a time; the Gram sums, not the batch size, set the stage's speed.
    /// </summary>
    internal const long MaxActivationBytes = 64L << 20;

    // Rows per product when adding to a Gram matrix: the kernel's inner block.
    private const int RowsPerProduct = 256;

    // The product's operands for up to RowsPerProduct rows of n inputs, and a convolution's patches. Taken from
    // the computation's pool for a layer's batch and put back: a new set per layer and batch (28 MB for
    // ResNet-50's widest layer) was garbage the collector let pile up; the pool holds one per thread that
    // accumulates at once, grown to the widest layer, and goes when the computation ends.
    private sealed class GramScratch(int n)
    {
        public int Capacity { get; } = n;

        public double[] Rows { get; } = new double[(long)RowsPerProduct * n];

        public double[] NegatedTranspose { get; } = new double[(long)n * RowsPerProduct];

        public float[] Patch { get; } = new float[(long)RowsPerProduct * n];
    }

    // gram += X^T X over the `count` rows of X (length n, at `stride`), as the product kernel's C -= (-X^T) X, in
    // chunks of rows: compute-bound tiles instead of one strided dot product per entry.
    private static void AddRows(SymmetricMatrix gram, float[] rows, int first, int count, int n, int stride, GramScratch scratch)
    {
        var x = scratch.Rows;
        var negatedTranspose = scratch.NegatedTranspose;
        for (var r0 = 0; r0 < count; r0 += RowsPerProduct)
        {
            var depth = Math.Min(RowsPerProduct, count - r0);
            for (var r = 0; r < depth; r++)
            {
                var row = (long)(first + r0 + r) * stride;
                for (var a = 0; a < n; a++)
                {
                    var value = (double)rows[row + a];
                    x[((long)r * n) + a] = value;
                    negatedTranspose[((long)a * depth) + r] = -value;
                }
            }

            gram.AddGram(x, negatedTranspose, depth);
        }
    }

    private static long Int(NodeProto node, string name, long fallback) =>
        node.Attribute.FirstOrDefault(a => a.Name == name)?.I ?? fallback;

    private static int[] Ints(NodeProto node, string name, int count, int fallback) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { Ints.Count: > 0 } attribute
            ? attribute.Ints.Select(v => (int)v).ToArray()
            : Enumerable.Repeat(fallback, count).ToArray();

    // Begin pads then end pads, from `pads` or from auto_pad (SAME_UPPER puts the odd pad at the end).
    private static int[] Pads(NodeProto node, int spatial, int[] input, int[] kernel, int[] strides, int[] dilations)
    {
        var autoPad = node.Attribute.FirstOrDefault(a => a.Name == "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            var pads = new int[2 * spatial];
            for (var a = 0; a < spatial; a++)
            {
                var output = (input[a] + strides[a] - 1) / strides[a];
                var total = Math.Max(0, ((output - 1) * strides[a]) + (dilations[a] * (kernel[a] - 1)) + 1 - input[a]);
                pads[a] = autoPad == "SAME_UPPER" ? total / 2 : total - (total / 2);
                pads[a + spatial] = total - pads[a];
            }

            return pads;
        }

        return Ints(node, "pads", 2 * spatial, 0);
    }
}
