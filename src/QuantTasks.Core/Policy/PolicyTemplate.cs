using System.Text;
using static System.FormattableString;

namespace QuantTasks.Policy;

/// <summary>The commented <c>quant.yaml</c> that <c>dotnet quant init</c> writes.</summary>
internal static class PolicyTemplate
{
    /// <summary>
    /// The policy text. Paths are written as given (relative to the policy file). Without calibration data the
    /// sensitivity analysis is off, since it needs samples; the comments say how to turn it on.
    /// </summary>
    /// <param name="schemaReference">What the <c>yaml-language-server</c> line points editors to.</param>
    /// <param name="modelPath">The model, relative to the policy.</param>
    /// <param name="calibration">Calibration data, relative to the policy, or null.</param>
    /// <param name="evaluation">Evaluation data, relative to the policy, or null.</param>
    public static string Render(string schemaReference, string modelPath, string? calibration, string? evaluation)
    {
        var text = new StringBuilder();
        void Line(string line) => text.Append(line).Append('\n');
        Line($"# yaml-language-server: $schema={schemaReference}");
        Line("# QuantTasks policy: how `dotnet build` (or `dotnet quant quantize`) compresses this project's ONNX models.");
        Line("# Every key is optional except version and models; the values shown are the defaults unless noted.");
        Line("version: 1");
        Line("models:");
        Line($"  - path: {Quote(modelPath)}           # relative to this file");
        Line("    # name: Digits                     # generated class DigitsModel; default from the file name");
        Line("    # namespace: MyApp.Models          # default: the project's RootNamespace + .Models");
        Line("    # output: logits                   # the graph output with the logits; default: the first");
        Line("data:");
        Line(calibration is null
            ? "  # calibration: data/calib.npz       # samples for the Hessian analysis (.npz; labels optional)"
            : $"  calibration: {Quote(calibration)}  # samples for the Hessian analysis (labels optional)");
        Line(evaluation is null
            ? "  # evaluation: data/test.npz         # samples for the accuracy gate (.npz; labels optional)"
            : $"  evaluation: {Quote(evaluation)}  # samples for the accuracy gate (labels optional)");
        Line("  # training: data/train.npz          # samples for finetune (.npz; labels optional), disjoint from evaluation");
        Line("sensitivity:");
        Line("  method: none                       # none | trace (Hutchinson, HAWQ-V2) | eigenvalue; for omega: sensitivity or hessian-diagonal, finetune order: hawq");
        Line("  loss: auto                         # auto | cross-entropy | kl | mse");
        Line(Invariant($"  samples: {PolicyDefaults.Samples}"));
        Line(Invariant($"  batch_size: {PolicyDefaults.BatchSize}"));
        Line(Invariant($"  max_iterations: {PolicyDefaults.MaxIterations}"));
        Line(Invariant($"  tolerance: {PolicyDefaults.Tolerance}"));
        Line(Invariant($"  sketch: {PolicyDefaults.Sketch}").PadRight(37) + "# Hutch++: Hessian directions taken exactly before probing the trace; 0 = Hutchinson alone");
        Line("  seed: 0");
        Line("  device: auto                       # auto | cpu | cuda");
        Line("quantization:");
        Line("  method: uniform                    # uniform | kmeans | hessian-kmeans | ecsq | auto (the search picks uniform or ecsq per tensor)");
        Line("  granularity: auto                  # auto (the search picks per tensor) | per-channel | per-tensor");
        Line("  scheme: asymmetric                 # asymmetric | symmetric (uniform levels centred on zero)");
        Line(Invariant($"  bits: [{string.Join(", ", PolicyDefaults.Bits)}]").PadRight(37) + "# candidates per tensor");
        Line("  budget:                            # exactly one of:");
        Line(Invariant($"    compression_ratio: {PolicyDefaults.CompressionRatio}").PadRight(37) + "#   float32 weight bytes / compressed bytes");
        Line("    # max_size: 64KB                 #   compressed bytes of all weights (KB = 1000 B, KiB = 1024 B)");
        Line("    # average_bits: 4                #   coded bits per weight");
        Line("  keep_float: [\"*bias*\"]             # globs of tensors left in float32");
        Line("  # overrides:                       # fixed choices by tensor name, first match wins");
        Line("  #   - match: \"conv1.*\"");
        Line("  #     bits: 8");
        Line("  search: dp                         # dp (exact) | greedy (HAWQ-V1 order)");
        Line(calibration is null
            ? "  omega: sensitivity                 # calibrated-output-error (layer outputs in the loss's units, label-free; needs data.calibration) | output-error | sensitivity x squared error (HAWQ) | hessian-diagonal | measured (loss increase) | relative-output-error"
            : "  omega: calibrated-output-error     # calibrated-output-error (layer outputs in the loss's units, label-free) | output-error | sensitivity x squared error (HAWQ) | hessian-diagonal | measured (loss increase) | relative-output-error");
        Line(calibration is null
            ? "  compensation: none                 # gptq (second-order compensated rounding, label-free; needs data.calibration) | none"
            : "  compensation: gptq                 # gptq (second-order compensated rounding, label-free) | none");
        Line("  gptq:                              # for compensation: gptq");
        Line(Invariant($"    dampening: {PolicyDefaults.GptqDampening}").PadRight(37) + "#   fraction of the mean Hessian diagonal added to it");
        Line("    order: descending-diagonal       #   descending-diagonal (GPTQ's act order) | natural | auto (both, the smaller layer error kept)");
        Line(Invariant($"    samples: {PolicyDefaults.GptqSamples}").PadRight(37) + "#   calibration samples for the layer Hessians");
        Line("    mask: saliency                   #   saliency (SparseGPT, chosen while compensating) | magnitude");
        Line("    sequential: false                #   true: each layer again on the quantized layers' outputs");
        Line("    clip: false                      #   true: uniform ranges clipped to the layer's input energy");
        Line("  ecsq:                              # for method: ecsq");
        Line("    algorithm: iterative             #   iterative (distortion + lambda * code length) | uniform");
        Line(Invariant($"    lambda: {PolicyDefaults.EcsqLambda}").PadRight(37) + "#   0 = k-means; larger = fewer bits");
        Line("  joint_check:                       # after the search: every tensor quantized at once, measured (needs data.calibration)");
        Line("    enabled: true                    #   false: trust the summed per-tensor costs");
        Line(Invariant($"    margin: {PolicyDefaults.JointCheckMargin}").PadRight(37) + "#   correct when the joint loss exceeds the sum by more than this fraction");
        Line(Invariant($"    rounds: {PolicyDefaults.JointCheckRounds}").PadRight(37) + "#   most correction rounds");
        Line(Invariant($"    samples: {PolicyDefaults.JointCheckSamples}").PadRight(37) + "#   calibration samples per forward pass");
        Line(Invariant($"    max_passes: {PolicyDefaults.JointCheckMaxPasses}").PadRight(37) + "#   most forward passes, corrections included");
        Line(Invariant($"  softmax_temperature: {PolicyDefaults.SoftmaxTemperature}").PadRight(37) + "# a Softmax output is compared as softmax(logits / T) in the measured losses; 1 = the probabilities as they are");
        Line("  seed: 0                            # k-means++ seeding");
        Line("pruning:");
        Line("  sparsity: 0.0                      # fraction of smallest weights set to zero; 0 = off");
        Line("  scope: per-tensor                  # per-tensor | global (one magnitude threshold)");
        Line("  candidates: []                     # e.g. [0, 0.5, 0.7, 0.9]: the search picks each tensor's sparsity too");
        Line("encoding:");
        Line("  entropy: huffman                   # huffman | none");
        Line("accuracy:");
        Line("  metric: top1                       # top1 | agreement | cosine");
        Line(Invariant($"  max_drop: {PolicyDefaults.MaxDrop}").PadRight(37) + "# percentage points; more fails the build");
        Line("# finetune:                          # train the shared values after quantizing (needs data.training); sizes stay");
        Line("#   mode: shared                     #   shared (levels, symbols fixed) | qat (float weights quantization-aware, search again, then levels)");
        Line(Invariant($"#   epochs: {PolicyDefaults.FinetuneEpochs}").PadRight(37) + "#   per phase");
        Line(Invariant($"#   batch_size: {PolicyDefaults.FinetuneBatchSize}"));
        Line(Invariant($"#   learning_rate: {PolicyDefaults.FinetuneLearningRate}"));
        Line("#   schedule: cosine                 #   cosine | constant | step");
        Line("#   optimizer: adam                  #   adam | sgd");
        Line(Invariant($"#   momentum: {PolicyDefaults.FinetuneMomentum}").PadRight(37) + "#   for optimizer: sgd");
        Line("#   loss: auto                       #   auto (mixed with labels, distillation without) | cross-entropy | distillation | mixed");
        Line(Invariant($"#   temperature: {PolicyDefaults.FinetuneTemperature}").PadRight(37) + "#   distillation's softening of the float model's outputs");
        Line(Invariant($"#   alpha: {PolicyDefaults.FinetuneAlpha}").PadRight(37) + "#   weight of cross-entropy in loss: mixed");
        Line(Invariant($"#   validation: {PolicyDefaults.FinetuneValidation}").PadRight(37) + "#   fraction of data.training held out for early stopping");
        Line(Invariant($"#   patience: {PolicyDefaults.FinetunePatience}").PadRight(37) + "#   epochs without progress before stopping; 0 = never");
        Line("#   order: joint                     #   joint | hawq (unfreeze the most sensitive tensors first)");
        Line(Invariant($"#   stages: {PolicyDefaults.FinetuneStages}").PadRight(37) + "#   unfreezing stages of order: hawq");
        Line("#   seed: 0                          #   shuffling and the held-out split");
        Line("#   device: auto                     #   auto | cpu | cuda");
        return text.ToString();
    }

    // Plain YAML when the path needs no quoting, double-quoted otherwise.
    private static string Quote(string path)
    {
        var plain = path.Length > 0 && path.All(c => char.IsLetterOrDigit(c) || c is '/' or '.' or '_' or '-')
            && !char.IsDigit(path[0]);
        return plain ? path : "\"" + path.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
    }

    /// <summary>A path relative to <paramref name="folder"/>, with forward slashes (YAML reads the same on every OS).</summary>
    public static string Relative(string folder, string path) =>
        System.IO.Path.GetRelativePath(folder, path).Replace('\\', '/');

}
