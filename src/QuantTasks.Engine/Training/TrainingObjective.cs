using QuantTasks.Diagnostics;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using TorchSharp;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QuantTasks.Engine.Training;

/// <summary>
/// The loss fine-tuning minimises and the held-out accuracy it reports, fitted to what produces the model's
/// output. An output that is a Softmax or Sigmoid is trained through the logits before it, where the temperature
/// means something and the gradients do not vanish where the probabilities saturate:
/// <list type="bullet">
/// <item>class logits: cross-entropy against labels, and distillation T^2 KL(softmax(t/T) || softmax(s/T)) (Hinton et al.);</item>
/// <item>a sigmoid map: per-element binary KL between sigmoid(t/T) and sigmoid(s/T), times T^2, averaged;</item>
/// <item>anything else: mean squared error to the float model's values.</item>
/// </list>
/// </summary>
internal sealed class TrainingObjective : IDisposable
{
    // Scalars made once, outside any dispose scope, and passed explicitly: a temporary scalar that the garbage
    // collector finalizes while libtorch still reads it corrupts the step (see LibTorch.One).
    private readonly Scalar _inverseTemperature;
    private readonly Scalar _temperatureSquared;
    private readonly Scalar _alpha;
    private readonly Scalar _oneMinusAlpha;

    private TrainingObjective(string scores, ScoreKind kind, long axis, FinetuneLoss loss, double temperature, double alpha)
    {
        Scores = scores;
        Kind = kind;
        Axis = axis;
        Loss = loss;
        _inverseTemperature = (1 / temperature).ToScalar();
        _temperatureSquared = (temperature * temperature).ToScalar();
        _alpha = alpha.ToScalar();
        _oneMinusAlpha = (1 - alpha).ToScalar();
    }

    public void Dispose()
    {
        foreach (var s in new[] { _inverseTemperature, _temperatureSquared, _alpha, _oneMinusAlpha })
        {
            s.Dispose();
        }
    }

    /// <summary>The graph value trained on: the output, or the logits before its Softmax or Sigmoid.</summary>
    public string Scores { get; }

    /// <summary>How the scores are compared.</summary>
    public ScoreKind Kind { get; }

    /// <summary>The class axis of categorical scores.</summary>
    public long Axis { get; }

    /// <summary>The loss, auto resolved.</summary>
    public FinetuneLoss Loss { get; }

    /// <summary>Whether the loss needs the float model's scores.</summary>
    public bool NeedsTeacher => Loss != FinetuneLoss.CrossEntropy;

    /// <summary>The held-out metric's name: top1 against labels, agreement with the float model without, or none.</summary>
    public string? Metric(bool labels) => Kind == ScoreKind.Values ? null : labels && Kind == ScoreKind.Categorical ? "top1" : "agreement";

    /// <summary>Chooses the scores and the loss for a model's output.</summary>
    /// <param name="model">The model.</param>
    /// <param name="output">The output trained on (the policy's <c>output</c>, or the first).</param>
    /// <param name="options">The policy's finetune section.</param>
    /// <param name="hasLabels">Whether the training file has labels.</param>
    /// <param name="trainingPath">The training file, for errors.</param>
    public static TrainingObjective For(OnnxModel model, string output, FinetuneOptions options, bool hasLabels, string trainingPath)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var loss = options.Loss switch
        {
            FinetuneLoss.Auto => hasLabels ? FinetuneLoss.Mixed : FinetuneLoss.Distillation,
            FinetuneLoss.CrossEntropy or FinetuneLoss.Mixed when !hasLabels => throw new QuantException(ErrorCode.DataMissingArray,
                $"finetune.loss is {(options.Loss == FinetuneLoss.Mixed ? "mixed" : "cross-entropy")}, which needs labels, but '{trainingPath}' has no 'label' array. Add labels, or use loss: distillation (needs none).",
                new SourceLocation(trainingPath)),
            _ => options.Loss,
        };

        var form = OutputForm.Of(model.Graph, model.Opset, output);
        var (scores, kind, axis, rank) = (form.Scores, form.Kind, form.Axis, form.Rank);
        if (loss is FinetuneLoss.CrossEntropy or FinetuneLoss.Mixed && (kind != ScoreKind.Categorical || rank != 2))
        {
            throw new QuantException(ErrorCode.DataWrongType,
                $"finetune.loss {JsonName(loss)} compares labels with class scores, but the output '{output}' is not samples x classes (rank {rank}, {JsonName(kind)} values). Use loss: distillation.",
                new SourceLocation(trainingPath));
        }

        return new TrainingObjective(scores, kind, axis, loss, options.Temperature, options.Alpha);
    }

    /// <summary>The mean loss of a batch.</summary>
    /// <param name="student">The quantized model's scores.</param>
    /// <param name="teacher">The float model's scores (detached), or null when the loss needs none.</param>
    /// <param name="labels">Class ids, or null.</param>
    public Tensor Compute(Tensor student, Tensor? teacher, Tensor? labels)
    {
        ArgumentNullException.ThrowIfNull(student);
        return Loss switch
        {
            FinetuneLoss.CrossEntropy => F.cross_entropy(student, labels!),
            FinetuneLoss.Distillation => Distillation(student, teacher!),
            _ => F.cross_entropy(student, labels!).mul(_alpha).add(Distillation(student, teacher!).mul(_oneMinusAlpha), LibTorch.One),
        };
    }

    /// <summary>The distillation term alone.</summary>
    public Tensor Distillation(Tensor student, Tensor teacher)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        switch (Kind)
        {
            case ScoreKind.Categorical:
            {
                // Summed over the class axis, averaged over everything else; T^2 keeps the gradients' scale
                // independent of the temperature (Hinton et al.).
                var logQ = F.log_softmax(student.mul(_inverseTemperature), Axis);
                var logP = F.log_softmax(teacher.mul(_inverseTemperature), Axis);
                return (logP.exp() * logP.add(logQ, LibTorch.MinusOne)).sum(Axis).mean().mul(_temperatureSquared);
            }

            case ScoreKind.Binary:
            {
                var s = student.mul(_inverseTemperature);
                var a = teacher.mul(_inverseTemperature);
                var kl = (a.sigmoid() * F.logsigmoid(a).add(F.logsigmoid(s), LibTorch.MinusOne))
                    .add((-a).sigmoid() * F.logsigmoid(-a).add(F.logsigmoid(-s), LibTorch.MinusOne), LibTorch.One);
                return kl.mean().mul(_temperatureSquared);
            }

            default:
                return student.add(teacher, LibTorch.MinusOne).square().mean();
        }
    }

    /// <summary>
    /// How many of a batch's predictions are right: against labels (top-1), or agreeing with the float model's
    /// (argmax per class axis, or each probability on the same side of one half); with the number compared.
    /// </summary>
    public (long Correct, long Total) Agreement(Tensor student, Tensor? teacher, Tensor? labels)
    {
        ArgumentNullException.ThrowIfNull(student);
        switch (Kind)
        {
            case ScoreKind.Categorical when labels is not null && student.dim() == 2:
                return (student.argmax(1).eq(labels).sum().item<long>(), labels.numel());
            case ScoreKind.Categorical when teacher is not null:
                var predicted = student.argmax(Axis);
                return (predicted.eq(teacher.argmax(Axis)).sum().item<long>(), predicted.numel());
            case ScoreKind.Binary when teacher is not null:
                return (student.gt(LibTorch.Zero).eq(teacher.gt(LibTorch.Zero)).sum().item<long>(), student.numel());
            default:
                return (0, 0);
        }
    }

    private static string JsonName<T>(T value) where T : Enum =>
        System.Text.Json.JsonNamingPolicy.KebabCaseLower.ConvertName(value.ToString());
}
