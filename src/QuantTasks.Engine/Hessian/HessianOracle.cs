using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Evaluation;
using QuantTasks.Policy;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QuantTasks.Engine.Hessian;

/// <summary>
/// Hessian-vector products of the mean loss over the calibration samples with respect to the model's weights,
/// by double backward, one batch at a time. The loss is that of the first graph output (or the named one):
/// cross-entropy against labels, KL divergence from the float model's own softmax, or squared error to the
/// float model's outputs. The float model's outputs are the outputs at the current weights, detached, since
/// the weights are never changed.
/// </summary>
internal sealed class HessianOracle
{
    private readonly TorchGraph _graph;
    private readonly string _output;
    private readonly Batch[] _batches;
    private readonly Device _device;
    private readonly OutputForm _form;

    public HessianOracle(TorchGraph graph, DataFile data, LossKind loss, int samples, int batchSize, string? output, Device device)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(data);
        _graph = graph;
        _device = device;
        _output = output ?? graph.OutputNames[0];
        if (!graph.OutputNames.Contains(_output))
        {
            throw new QuantException(ErrorCode.PolicyInvalidValue,
                $"The model has no output '{_output}'; its outputs are {string.Join(", ", graph.OutputNames)}.");
        }

        var arrays = graph.InputNames.Select(name => (Name: name, Array: ModelEvaluator.InputArray(data, name, graph.InputNames.Count))).ToArray();
        var available = (int)arrays.Min(a => a.Array.Rows);
        var labels = data.Labels();
        _form = graph.DescribeOutput(_output);
        Loss = loss switch
        {
            // Labels are used where they fit (class scores, one per sample); otherwise the loss follows the output:
            // divergence for class scores and probability maps, squared error for anything else.
            LossKind.Auto when labels is not null && _form.TakesLabels => LossKind.CrossEntropy,
            LossKind.Auto => _form.Kind == ScoreKind.Values ? LossKind.Mse : LossKind.Kl,
            LossKind.CrossEntropy when labels is null => throw new QuantException(ErrorCode.DataMissingArray,
                $"sensitivity.loss is cross-entropy, but '{data.Path}' has no 'label' array. Add labels, or use loss: kl (needs none).",
                new SourceLocation(data.Path)),
            _ => loss,
        };
        Samples = Math.Min(samples, available);
        if (labels is not null && labels.Length < Samples)
        {
            throw new QuantException(ErrorCode.DataMissingArray,
                $"'{data.Path}' has {labels.Length} labels for {Samples} samples.", new SourceLocation(data.Path));
        }

        var batches = new List<Batch>();
        for (var start = 0; start < Samples; start += batchSize)
        {
            var count = Math.Min(batchSize, Samples - start);
            var inputs = arrays.ToDictionary(a => a.Name, a =>
            {
                var perSample = (int)(a.Array.Length / a.Array.Rows);
                var shape = a.Array.Shape.ToArray();
                shape[0] = count;
                return (ReadOnlyMemory<float>)a.Array.Floats!.AsMemory(start * perSample, count * perSample);
            });
            var shapes = arrays.ToDictionary(a => a.Name, a =>
            {
                var shape = a.Array.Shape.ToArray();
                shape[0] = count;
                return shape;
            });
            batches.Add(new Batch(inputs, shapes, labels?.AsMemory(start, count), (double)count / Samples));
        }

        _batches = batches.ToArray();
    }

    /// <summary>The loss actually used (auto resolved).</summary>
    public LossKind Loss { get; }

    /// <summary>Calibration samples used.</summary>
    public int Samples { get; }

    /// <summary>Number of batches per pass.</summary>
    public int BatchCount => _batches.Length;

    /// <summary>The leaves.</summary>
    public IReadOnlyList<Tensor> Parameters => _graph.Parameters;

    /// <summary>
    /// For every batch: builds the gradient graph once and lets <paramref name="useBatch"/> take any number of
    /// Hessian-vector products through it. Native memory is freed after each batch.
    /// </summary>
    public void ForEachBatch(Action<BatchProducts> useBatch)
    {
        ArgumentNullException.ThrowIfNull(useBatch);
        foreach (var batch in _batches)
        {
            using var scope = NewDisposeScope();
            useBatch(new BatchProducts(() => GradientGraph(batch), _graph.Parameters, batch.Weight));
        }
    }

    /// <summary>
    /// The batch's gradient graph (create_graph), built again while its gradients come back NaN from a finite loss:
    /// libtorch's transient NaN (see <see cref="TransientNaN"/>).
    /// </summary>
    private IList<Tensor> GradientGraph(Batch batch) =>
        TransientNaN.Retry(
            () =>
            {
                var loss = LossOf(batch);
                return (Loss: loss, Gradients: autograd.grad([loss], _graph.Parameters.ToList(), create_graph: true, retain_graph: true));
            },
            g => !TransientNaN.AllFinite([g.Loss]) || TransientNaN.AllFinite(g.Gradients)).Gradients;

    /// <summary>
    /// The mean loss over all samples and the norm of its gradient: one plain forward and backward pass per batch,
    /// the baseline a Hessian-vector product's cost is measured against, and a check that the weights sit near a
    /// minimum (a small gradient).
    /// </summary>
    public (double Loss, double GradientNorm) LossAndGradientNorm()
    {
        double total = 0;
        var sums = _graph.Parameters.Select(p => zeros(p.shape, ScalarType.Float64, _device)).ToArray();
        try
        {
            foreach (var batch in _batches)
            {
                using var scope = NewDisposeScope();
                var loss = LossOf(batch);
                var gradients = autograd.grad([loss], _graph.Parameters.ToList(), allow_unused: true);
                using var weight = batch.Weight.ToScalar();
                for (var t = 0; t < sums.Length; t++)
                {
                    if (!gradients[t].IsInvalid)
                    {
                        sums[t].add_(gradients[t].to(ScalarType.Float64), weight);
                    }
                }

                total += loss.item<float>() * batch.Weight;
            }

            return (total, Math.Sqrt(sums.Sum(s => s.square().sum().item<double>())));
        }
        finally
        {
            foreach (var s in sums)
            {
                s.Dispose();
            }
        }
    }

    private Tensor LossOf(Batch batch)
    {
        var inputs = batch.Inputs.ToDictionary(p => p.Key, p => tensor(p.Value.ToArray(), batch.Shapes[p.Key]).to(_device));
        switch (Loss)
        {
            case LossKind.CrossEntropy:
                // On the logits: a Softmax output's own input, where cross-entropy means what it says.
                var logits = _graph.Forward(inputs, [_form.Scores])[0];
                if (logits.dim() != 2 || _form.Kind != ScoreKind.Categorical)
                {
                    throw new QuantException(ErrorCode.DataWrongType,
                        $"Cross-entropy needs the output '{_output}' to be samples x classes; it has shape ({string.Join(", ", _graph.Forward(inputs, [_output])[0].shape)}). Use loss: kl.");
                }

                var labels = tensor(batch.Labels!.Value.ToArray(), ScalarType.Int64).to(_device);
                return F.cross_entropy(logits, labels);
            case LossKind.Kl when _form.Kind == ScoreKind.Categorical && _form.Scores == _output:
            {
                // KL(p || q) with p the float model's softmax, q the current one, over the class axis of the
                // logits; at the float weights its gradient vanishes and its Hessian is the Fisher information.
                var logQ = F.log_softmax(_graph.Forward(inputs, [_output])[0], _form.Axis);
                var logP = logQ.detach();
                return (logP.exp() * logP.add(logQ, LibTorch.MinusOne)).sum(_form.Axis).mean();
            }

            case LossKind.Kl when _form.Kind == ScoreKind.Binary:
            {
                // A probability map: per-element binary KL through the Sigmoid's input, averaged over the map.
                var s = _graph.Forward(inputs, [_form.Scores])[0];
                var a = s.detach();
                return ((a.sigmoid() * F.logsigmoid(a).add(F.logsigmoid(s), LibTorch.MinusOne))
                    .add((-a).sigmoid() * F.logsigmoid(-a).add(F.logsigmoid(-s), LibTorch.MinusOne), LibTorch.One)).mean();
            }

            case LossKind.Kl:
            {
                // Values that are not raw class logits: a softmax over the last axis, as before. For an output that is
                // already a Softmax this is flat; comparing its probabilities (or its logits) properly gave NaN
                // power iterations on the PP-OCR recognizer, which is not understood yet (issue 14).
                var logQ = F.log_softmax(_graph.Forward(inputs, [_output])[0], -1);
                var logP = logQ.detach();
                return (logP.exp() * logP.add(logQ, LibTorch.MinusOne)).sum(-1).mean();
            }

            default:
                var output = _graph.Forward(inputs, [_output])[0];
                return output.add(output.detach(), LibTorch.MinusOne).pow(2).mean();
        }
    }

    private sealed record Batch(Dictionary<string, ReadOnlyMemory<float>> Inputs, Dictionary<string, long[]> Shapes, ReadOnlyMemory<long>? Labels, double Weight);
}

/// <summary>
/// Hessian-vector products through one batch's gradient graph. A product that comes back NaN is computed again on
/// a gradient graph built anew: the NaN of libtorch's multi-threaded kernels (see <see cref="TransientNaN"/>) can
/// sit in a buffer the graph saved for the second backward pass, where repeating the product on the same graph
/// meets it every time.
/// </summary>
internal sealed class BatchProducts
{
    private readonly Func<IList<Tensor>> _build;
    private readonly IReadOnlyList<Tensor> _parameters;
    private IList<Tensor> _gradients;

    /// <param name="build">Builds the batch's gradient graph (called once, and again after a NaN product).</param>
    /// <param name="parameters">The leaves.</param>
    /// <param name="weight">The batch's share of the samples.</param>
    public BatchProducts(Func<IList<Tensor>> build, IReadOnlyList<Tensor> parameters, double weight)
    {
        ArgumentNullException.ThrowIfNull(build);
        _build = build;
        _parameters = parameters;
        _gradients = build();
        Weight = weight;
    }

    /// <summary>The batch's share of the samples: products are scaled by it to give the mean over all samples.</summary>
    public double Weight { get; }

    /// <summary>The gradient of the batch's mean loss with respect to parameter <paramref name="t"/>.</summary>
    public Tensor Gradient(int t) => _gradients[t];

    /// <summary>H v for a vector given per parameter (same shapes), as the batch's unscaled Hessian.</summary>
    public IList<Tensor> Product(IList<Tensor> vector) =>
        TransientNaN.Retry(
            () => autograd.grad(_gradients, _parameters.ToList(), grad_outputs: vector, retain_graph: true, allow_unused: true)
                .Select((g, i) => g.IsInvalid ? zeros_like(_parameters[i]) : g).ToList(),
            TransientNaN.AllFinite,
            _ => _gradients = _build());

    /// <summary>The block product H_tt v_t for one parameter t.</summary>
    public Tensor BlockProduct(int t, Tensor vector) =>
        TransientNaN.Retry(
            () =>
            {
                var result = autograd.grad([(_gradients[t] * vector).sum()], [_parameters[t]], retain_graph: true, allow_unused: true)[0];
                return result.IsInvalid ? zeros_like(_parameters[t]) : result;
            },
            result => TransientNaN.AllFinite([result]),
            _ => _gradients = _build());
}
