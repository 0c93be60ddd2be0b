using QuantTasks.Evaluation;
using QuantTasks.Onnx.Proto;

namespace QuantTasks.Engine.Graph;

/// <summary>What the scores a loss compares are, which decides how they are compared.</summary>
internal enum ScoreKind
{
    /// <summary>Class logits along an axis (a Softmax's input, or a samples x classes output).</summary>
    Categorical,

    /// <summary>Per-element logits of independent probabilities (a Sigmoid's input: a probability map).</summary>
    Binary,

    /// <summary>Any other values (regression, embeddings): compared by squared error.</summary>
    Values,
}

/// <summary>
/// What produces a model output, for the losses of the analysis and of fine-tuning. An output that is a Softmax,
/// LogSoftmax or Sigmoid is compared through the logits before it: a softmax taken of probabilities is nearly flat,
/// and probabilities that saturate at 0 or 1 have vanishing gradients.
/// </summary>
/// <param name="Output">The graph output.</param>
/// <param name="Scores">The value compared: the output, or the logits before its Softmax or Sigmoid.</param>
/// <param name="Kind">How the scores are compared.</param>
/// <param name="Axis">The class axis of categorical scores.</param>
/// <param name="Rank">The output's declared rank (0 when the graph does not say).</param>
internal sealed record OutputForm(string Output, string Scores, ScoreKind Kind, long Axis, int Rank)
{
    /// <summary>Whether class labels (one per sample) fit: categorical scores of shape samples x classes.</summary>
    public bool TakesLabels => Kind == ScoreKind.Categorical && Rank == 2;

    /// <summary>
    /// How a loss measured on the output itself compares it (ONNX Runtime's forward passes see the output, not the
    /// logits before it): class logits or log-probabilities are softmaxed per position along the class axis, a
    /// Softmax's probabilities at <paramref name="softmaxTemperature"/> (the logits before it divided by T, recovered
    /// from the probabilities), a Sigmoid map by binary KL, values by squared error. An output whose rank the graph
    /// does not declare is taken as class logits, as the evaluation takes it.
    /// </summary>
    /// <param name="graph">The model's graph.</param>
    /// <param name="softmaxTemperature">The policy's <c>quantization.softmax_temperature</c>.</param>
    public OutputLoss MeasuredOn(GraphProto graph, double softmaxTemperature)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var producer = graph.Node.LastOrDefault(n => n.Output.Contains(Output));
        return Kind switch
        {
            ScoreKind.Binary => new OutputLoss(OutputComparison.BinaryProbabilities),
            ScoreKind.Categorical when Scores == Output || producer?.OpType == "LogSoftmax" => new OutputLoss(OutputComparison.Logits, Axis),
            ScoreKind.Categorical => new OutputLoss(OutputComparison.Probabilities, Axis, softmaxTemperature),
            _ when Rank == 0 => OutputLoss.ClassLogits,
            _ => new OutputLoss(OutputComparison.Values),
        };
    }

    /// <summary>Describes a graph output.</summary>
    public static OutputForm Of(GraphProto graph, long opset, string output)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var producer = graph.Node.LastOrDefault(n => n.Output.Contains(output));
        var rank = graph.Output.FirstOrDefault(o => o.Name == output)?.Type?.TensorType?.Shape?.Dim.Count ?? 0;
        return producer switch
        {
            { OpType: "Softmax" or "LogSoftmax" } n when string.IsNullOrEmpty(n.Domain) || n.Domain == "ai.onnx" =>
                new(output, n.Input[0], ScoreKind.Categorical, n.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? (opset >= 13 ? -1 : 1), rank),
            { OpType: "Sigmoid" } n when string.IsNullOrEmpty(n.Domain) || n.Domain == "ai.onnx" =>
                new(output, n.Input[0], ScoreKind.Binary, -1, rank),
            _ when rank == 2 => new(output, output, ScoreKind.Categorical, 1, rank),
            _ => new(output, output, ScoreKind.Values, -1, rank),
        };
    }
}
