using Google.Protobuf;
using QuantTasks.Diagnostics;
using QuantTasks.Onnx.Proto;

namespace QuantTasks.Onnx;

/// <summary>
/// An ONNX model in memory: the parsed <see cref="ModelProto"/> with every tensor's data resident, whether the
/// file kept it inline or in external data files. <see cref="Save"/> writes tensors that came from external files
/// back to external files, so a model over protobuf's 2 GB limit stays writable.
/// </summary>
internal sealed class OnnxModel
{
    // Tensors whose data came from an external file, with the location they came from. Keyed by reference:
    // a tensor the caller replaces with a new object is written inline unless it is large.
    private readonly Dictionary<TensorProto, string> _externalLocations = new(ReferenceEqualityComparer.Instance);

    private OnnxModel(ModelProto proto, string path, string fullPath)
    {
        Proto = proto;
        Path = path;
        FullPath = fullPath;
    }

    /// <summary>The model's protobuf message. Tensor data is always inline here (<c>raw_data</c> or typed fields).</summary>
    public ModelProto Proto { get; }

    /// <summary>The path the model was read from, as given; errors name the file this way.</summary>
    public string Path { get; }

    /// <summary>The full path the model was read from.</summary>
    public string FullPath { get; }

    /// <summary>The main graph.</summary>
    public GraphProto Graph => Proto.Graph;

    /// <summary>The version of the default ONNX operator set (<c>ai.onnx</c>) the model imports.</summary>
    public long Opset =>
        Proto.OpsetImport.FirstOrDefault(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx")?.Version ?? 0;

    /// <summary>The external data files the model's tensors were read from, relative to its folder, sorted.</summary>
    public IReadOnlyList<string> ExternalDataLocations =>
        _externalLocations.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();

    /// <summary>Whether the tensor's data was read from an external data file.</summary>
    public bool CameFromExternalData(TensorProto tensor) => _externalLocations.ContainsKey(tensor);

    /// <summary>Reads an ONNX model and any external data files it names.</summary>
    /// <exception cref="QuantException">The file is missing, not ONNX, truncated, or names bad external data.</exception>
    public static OnnxModel Load(string path)
    {
        var fullPath = System.IO.Path.GetFullPath(path);
        if (!File.Exists(fullPath))
        {
            throw new QuantException(ErrorCode.FileNotFound,
                $"ONNX model '{path}' does not exist. Check the path (relative paths are resolved from {Environment.CurrentDirectory}).",
                new SourceLocation(path));
        }

        ModelProto proto;
        try
        {
            // Read exactly the bytes the file holds (a device or pipe is refused before any read), then parse.
            proto = ModelProto.Parser.ParseFrom(InputFile.ReadAllBytes(fullPath, "ONNX model", new SourceLocation(path)));
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new QuantException(ErrorCode.OnnxUnreadable,
                $"'{path}' is not a readable ONNX model: {e.Message.TrimEnd('.')}. The file is truncated or is not an ONNX protobuf; export the model again.",
                new SourceLocation(path), e);
        }
        catch (IOException e)
        {
            throw new QuantException(ErrorCode.FileAccess, $"Cannot read '{path}': {e.Message}", new SourceLocation(path), e);
        }

        CheckLooksLikeOnnx(proto, path);
        var model = new OnnxModel(proto, path, fullPath);
        CheckNames(proto.Graph, path);
        model.ResolveExternalData();
        model.CheckStoredSizes();
        return model;
    }

    /// <summary>
    /// Writes the model to <paramref name="path"/>. Tensors read from external data files go to external files of
    /// the same names beside the output. Each file is written under a temporary name and renamed, so a failure
    /// never leaves a half-written model.
    /// </summary>
    public void Save(string path)
    {
        var fullPath = System.IO.Path.GetFullPath(path);
        var folder = System.IO.Path.GetDirectoryName(fullPath)!;
        Directory.CreateDirectory(folder);

        // Serialize a copy so that this model keeps its inline data after the save.
        var copy = Proto.Clone();
        var externalWrites = new Dictionary<string, List<(TensorProto Tensor, ByteString Data)>>(StringComparer.Ordinal);
        var originals = OnnxTensors.All(Proto.Graph).ToList();
        var copies = OnnxTensors.All(copy.Graph).ToList();
        for (var i = 0; i < originals.Count; i++)
        {
            if (_externalLocations.TryGetValue(originals[i], out var location))
            {
                if (!externalWrites.TryGetValue(location, out var list))
                {
                    externalWrites[location] = list = [];
                }

                list.Add((copies[i], copies[i].RawData));
            }
        }

        var pending = new List<(string Temp, string Final)>();
        try
        {
            foreach (var (location, tensors) in externalWrites)
            {
                var final = ExternalData.ResolveInside(folder, location, path);
                var temp = final + ".tmp-" + Guid.NewGuid().ToString("N");
                pending.Add((temp, final));
                using var stream = File.Create(temp);
                foreach (var (tensor, data) in tensors)
                {
                    var offset = stream.Position;
                    data.WriteTo(stream);
                    ExternalData.MarkExternal(tensor, location, offset, data.Length);
                }
            }

            var modelTemp = fullPath + ".tmp-" + Guid.NewGuid().ToString("N");
            pending.Add((modelTemp, fullPath));
            using (var stream = File.Create(modelTemp))
            {
                copy.WriteTo(stream);
            }

            foreach (var (temp, final) in pending)
            {
                File.Move(temp, final, overwrite: true);
            }
        }
        catch
        {
            foreach (var (temp, _) in pending)
            {
                File.Delete(temp);
            }

            throw;
        }
    }

    /// <summary>The model serialized to bytes with all tensor data inline (for ONNX Runtime's in-memory loading).</summary>
    public byte[] ToBytes() => Proto.ToByteArray();

    /// <summary>Finds the tensor named <paramref name="name"/>: an initializer or the value of a <c>Constant</c> node.</summary>
    public TensorProto? FindTensor(string name) => FindTensor(Graph, name);

    /// <summary>Finds the tensor named <paramref name="name"/> in <paramref name="graph"/>: an initializer or the value of a <c>Constant</c> node.</summary>
    public static TensorProto? FindTensor(GraphProto graph, string name)
    {
        ArgumentNullException.ThrowIfNull(graph);
        foreach (var init in graph.Initializer)
        {
            if (init.Name == name)
            {
                return init;
            }
        }

        foreach (var node in graph.Node)
        {
            if (node.OpType == "Constant" && node.Output.Count == 1 && node.Output[0] == name)
            {
                return node.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
            }
        }

        return null;
    }

    /// <summary>
    /// A copy of <paramref name="model"/> and its graph whose fields and lists can be changed (outputs added, a
    /// tensor swapped by <see cref="ReplaceFloatValues"/>) without touching the original; the nodes, tensors and
    /// other messages in the lists are shared, not copied. A deep clone of a 100 MB model is another 100 MB held
    /// beside it while its bytes go to ONNX Runtime; this copy is a few lists. Fields this build's ONNX schema does
    /// not know (a newer exporter's) stay in the copy, so ONNX Runtime is given the model the user gave.
    /// </summary>
    public static ModelProto ShallowCopy(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);

        // Protobuf's merge into an empty message is the shallow copy: a singular message field (the graph) is
        // merged into a new message in turn, a repeated field gets a new list holding the same elements, and the
        // unknown fields are copied. Copying field by field through the descriptors lost those.
        var copy = new ModelProto();
        copy.MergeFrom(model);
        return copy;
    }

    /// <summary>
    /// Gives tensor <paramref name="name"/> (an initializer or a <c>Constant</c> node's value) of a graph made by
    /// <see cref="ShallowCopy"/> new float32 values, in a copy of the tensor (or node) put in its place, so the graph
    /// it was copied from keeps its values.
    /// </summary>
    /// <returns>False when the graph has no such float32 tensor.</returns>
    public static bool ReplaceFloatValues(GraphProto graph, string name, float[] values)
    {
        ArgumentNullException.ThrowIfNull(graph);
        for (var i = 0; i < graph.Initializer.Count; i++)
        {
            if (graph.Initializer[i].Name == name)
            {
                if (graph.Initializer[i].DataType != (int)TensorProto.Types.DataType.Float)
                {
                    return false;
                }

                graph.Initializer[i] = graph.Initializer[i].Clone();
                SetFloatValues(graph.Initializer[i], values);
                return true;
            }
        }

        for (var i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            if (node.OpType == "Constant" && node.Output.Count == 1 && node.Output[0] == name
                && node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { DataType: (int)TensorProto.Types.DataType.Float })
            {
                graph.Node[i] = node.Clone();
                SetFloatValues(graph.Node[i].Attribute.First(a => a.Name == "value").T, values);
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// A copy of the model with new float32 values for some tensors (initializers or <c>Constant</c> nodes), the
    /// rest unchanged: what fine-tuning hands on after training biases. It keeps this model's paths.
    /// </summary>
    public OnnxModel WithFloatValues(IReadOnlyDictionary<string, float[]> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var copy = new OnnxModel(Proto.Clone(), Path, FullPath);
        foreach (var (name, data) in values)
        {
            var tensor = FindTensor(copy.Graph, name) ?? throw new ArgumentException($"The model has no tensor named '{name}'.", nameof(values));
            if (tensor.DataType != (int)TensorProto.Types.DataType.Float || TensorValues.ElementCount(tensor) != data.Length)
            {
                throw new ArgumentException($"Tensor '{name}' is not float32 with {data.Length} elements.", nameof(values));
            }

            SetFloatValues(tensor, data);
        }

        return copy;
    }

    /// <summary>Replaces a tensor's contents by float32 <paramref name="values"/> in place (inline raw data).</summary>
    public static void SetFloatValues(TensorProto tensor, float[] values)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(values);
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        tensor.FloatData.Clear();
        tensor.DoubleData.Clear();
        tensor.Int32Data.Clear();
        tensor.ExternalData.Clear();
        tensor.DataLocation = TensorProto.Types.DataLocation.Default;
        tensor.DataType = (int)TensorProto.Types.DataType.Float;
        tensor.RawData = Google.Protobuf.ByteString.CopyFrom(bytes);
    }

    private static void CheckLooksLikeOnnx(ModelProto proto, string path)
    {
        // Protobuf parses many non-ONNX byte strings without complaint; an ONNX model always has an IR version
        // and a graph, and a graph whose nodes have op types.
        if (proto.IrVersion <= 0 || proto.Graph is null || proto.Graph.Node.Any(n => string.IsNullOrEmpty(n.OpType)))
        {
            throw new QuantException(ErrorCode.OnnxUnreadable,
                $"'{path}' is not an ONNX model (it has no IR version or no graph). Give the .onnx file your exporter wrote.",
                new SourceLocation(path));
        }
    }

    /// <summary>
    /// Every value of a graph has one producer: a graph input, an initializer or a node output. Two initializers
    /// of one name (with different shapes, say) would leave it to each tool which one counts, and the executors
    /// disagree, so such a model is refused naming the value.
    /// </summary>
    private static void CheckNames(GraphProto graph, string path)
    {
        var initializers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var init in graph.Initializer)
        {
            if (!initializers.Add(init.Name))
            {
                throw new QuantException(ErrorCode.OnnxInvalidModel,
                    $"'{path}' has two initializers named '{init.Name}'. Each value of a graph must have one definition; export the model again.",
                    new SourceLocation(path));
            }
        }

        var produced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (var output in node.Output)
            {
                if (output.Length > 0 && (!produced.Add(output) || initializers.Contains(output)))
                {
                    throw new QuantException(ErrorCode.OnnxInvalidModel,
                        $"'{path}': the value '{output}' of node '{node.Name}' ({node.OpType}) is defined twice (by another node or an initializer). Each value of a graph must have one definition; export the model again.",
                        new SourceLocation(path));
                }
            }
        }
    }

    /// <summary>Reads a tensor's elements as float32; errors name this model's file.</summary>
    public float[] ReadFloats(TensorProto tensor)
    {
        try
        {
            return TensorValues.ReadAsFloat(tensor);
        }
        catch (QuantException e) when (e.Location is null)
        {
            throw new QuantException(e.Code, e.Message, new SourceLocation(Path), e.InnerException);
        }
    }

    private void ResolveExternalData()
    {
        var folder = System.IO.Path.GetDirectoryName(FullPath)!;
        foreach (var tensor in OnnxTensors.All(Proto.Graph))
        {
            if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
            {
                var location = ExternalData.Load(tensor, folder, Path);
                _externalLocations[tensor] = location;
            }
        }
    }

    // A tensor whose bytes disagree with its shape is reported when the model is read, naming the tensor,
    // rather than when some later stage touches it.
    private void CheckStoredSizes()
    {
        foreach (var tensor in OnnxTensors.All(Proto.Graph))
        {
            try
            {
                TensorValues.CheckStoredSize(tensor);
            }
            catch (QuantException e) when (e.Location is null)
            {
                throw new QuantException(e.Code, e.Message, new SourceLocation(Path), e.InnerException);
            }
        }
    }
}
