using QuantTasks.Onnx.Proto;

namespace QuantTasks.Onnx;

/// <summary>Walks the tensors a graph stores: initializers and <c>Constant</c> values, subgraphs included.</summary>
internal static class OnnxTensors
{
    /// <summary>Every stored tensor in a fixed order, so that two copies of one model enumerate alike.</summary>
    public static IEnumerable<TensorProto> All(GraphProto graph)
    {
        foreach (var init in graph.Initializer)
        {
            yield return init;
        }

        foreach (var sparse in graph.SparseInitializer)
        {
            if (sparse.Values is not null)
            {
                yield return sparse.Values;
            }

            if (sparse.Indices is not null)
            {
                yield return sparse.Indices;
            }
        }

        foreach (var node in graph.Node)
        {
            foreach (var attribute in node.Attribute)
            {
                if (attribute.T is not null)
                {
                    yield return attribute.T;
                }

                foreach (var tensor in attribute.Tensors)
                {
                    yield return tensor;
                }

                foreach (var subgraph in attribute.Graphs.Prepend(attribute.G))
                {
                    if (subgraph is null)
                    {
                        continue;
                    }

                    foreach (var tensor in All(subgraph))
                    {
                        yield return tensor;
                    }
                }
            }
        }
    }
}
