using QuantTasks.Engine.Pipeline;
using QuantTasks.Policy;
using QuantTasks.Runtime;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Training;

/// <summary>
/// Fine-tuning through the whole pipeline on LeNet-5 (trained by PyTorch) with the training digits, which are
/// disjoint from the evaluation digits: what it keeps (sizes, symbols, pruned zeros), what it buys (accuracy
/// measured by ONNX Runtime on the decoded blob), and that it is deterministic.
/// </summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class FinetunePipelineTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public FinetunePipelineTests()
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        _folder.Copy(Fixtures.Data("digits-training.npz"), "train.npz");
        _folder.Copy(Fixtures.Data("digits-test.npz"), "test.npz");
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Shared_values_train_without_changing_a_symbol_or_a_size_and_the_drop_shrinks()
    {
        var plain = new QuantizationPipeline().Run(Policy(null), Options("plain"));
        var tuned = new QuantizationPipeline().Run(Policy(new FinetuneOptions { Epochs = 2 }), Options("tuned"));

        var before = QuantBlob.Read(File.ReadAllBytes(plain.Models[0].BlobPath));
        var after = QuantBlob.Read(File.ReadAllBytes(tuned.Models[0].BlobPath));
        Assert.Equal(before.PayloadLength, after.PayloadLength);
        Assert.Equal(plain.Models[0].Report.Tensors.Select(t => t.Bytes), tuned.Models[0].Report.Tensors.Select(t => t.Bytes));
        foreach (var name in new[] { "conv2.weight", "fc1.weight", "fc2.weight" })
        {
            var original = before.DecodeFloats(name);
            var trained = after.DecodeFloats(name);
            Assert.NotEqual(original, trained);
            // The same weights share a value before and after (symbols did not move), and pruned weights stay zero.
            for (var i = 0; i < original.Length; i++)
            {
                if (original[i] == 0f)
                {
                    Assert.Equal(0f, trained[i]);
                }
            }

            Assert.Equal(Groups(original), Groups(trained));
        }

        var plainDrop = plain.Models[0].Report.Accuracy!.Drop;
        var tunedReport = tuned.Models[0].Report;
        Assert.True(tunedReport.Accuracy!.Drop < plainDrop - 0.2, $"fine-tuned drop {tunedReport.Accuracy.Drop} against {plainDrop}");
        var curve = tunedReport.Finetune!;
        Assert.Equal("mixed", curve.Loss);
        Assert.Equal("top1", curve.Metric);
        Assert.Equal([0, 1, 2], curve.Epochs.Select(e => e.Epoch));
        Assert.Equal(800, curve.HeldOutSamples);
        Assert.Equal(7200, curve.TrainingSamples);
        Assert.True(curve.Epochs[curve.BestEpoch].HeldOutLoss < curve.Epochs[0].HeldOutLoss);
        Assert.Contains("finetune", tunedReport.Stages!.Keys);
        Assert.Contains("| epoch | phase |", File.ReadAllText(Path.Combine(_folder.File("tuned"), "report.md")), StringComparison.Ordinal);
    }

    [Fact]
    public void The_same_policy_and_seed_give_byte_identical_fine_tuned_blobs()
    {
        // Without labels anywhere: loss auto distils the float model, and the held-out figure is agreement with it.
        var digits = QuantTasks.Data.DataFile.Load(_folder.File("train.npz")).Get("input");
        NpzWriter.Write(_folder.File("unlabelled.npz"), ("input", NpzWriter.Floats([2000, 1, 28, 28], digits.Floats!.AsSpan(0, 2000 * 784).ToArray())));
        var options = new FinetuneOptions { Epochs = 1 };
        var first = new QuantizationPipeline().Run(Policy(options, "unlabelled.npz"), Options("first"));
        var second = new QuantizationPipeline().Run(Policy(options, "unlabelled.npz"), Options("second"));

        Assert.Equal(File.ReadAllBytes(first.Models[0].BlobPath), File.ReadAllBytes(second.Models[0].BlobPath));
        Assert.Equal("distillation", first.Models[0].Report.Finetune!.Loss);
        Assert.Equal("agreement", first.Models[0].Report.Finetune!.Metric);
    }

    [Fact]
    public void Quantization_aware_training_searches_again_under_the_same_budget()
    {
        var result = new QuantizationPipeline().Run(Policy(new FinetuneOptions { Epochs = 1, Mode = FinetuneMode.Qat }), Options("qat"));

        var report = result.Models[0].Report;
        Assert.True(report.CompressionRatio >= 16, $"ratio {report.CompressionRatio}");
        Assert.Equal(["qat", "qat", "shared", "shared"], report.Finetune!.Epochs.Select(e => e.Phase));
        Assert.Equal([0, 1, 1, 2], report.Finetune.Epochs.Select(e => e.Epoch));
        Assert.True(report.Accuracy!.Drop < 1.0, $"drop {report.Accuracy.Drop}");
    }

    [Fact]
    public void A_training_file_with_a_NaN_stops_the_run_naming_it_and_writes_nothing()
    {
        var digits = QuantTasks.Data.DataFile.Load(_folder.File("train.npz")).Get("input").Floats!.AsSpan(0, 64 * 784).ToArray();
        digits[1000] = float.NaN;
        NpzWriter.Write(_folder.File("poisoned.npz"), ("input", NpzWriter.Floats([64, 1, 28, 28], digits)));

        var error = Assert.Throws<QuantTasks.Diagnostics.QuantException>(() =>
            new QuantizationPipeline().Run(Policy(new FinetuneOptions { Epochs = 1 }, "poisoned.npz"), Options("poisoned")));

        Assert.Equal(QuantTasks.Diagnostics.ErrorCode.NonFiniteValues, error.Code);
        Assert.Contains("poisoned.npz", error.ToString(), StringComparison.Ordinal);
        Assert.False(Directory.Exists(_folder.File("poisoned")));
    }

    // Which elements share a value: the partition the symbols define, as sorted lists of indices.
    private static string[] Groups(float[] values) =>
        values.Select((v, i) => (v, i)).GroupBy(p => p.v).Select(g => string.Join(',', g.Select(p => p.i))).Order(StringComparer.Ordinal).ToArray();

    private LoadedPolicy Policy(FinetuneOptions? finetune, string training = "train.npz") =>
        new(_folder.File("quant.yaml"), new QuantPolicy
        {
            Models = [new ModelOptions { Path = "lenet5.onnx", Name = "Digits" }],
            Data = new DataOptions { Evaluation = "test.npz", Training = finetune is null ? null : training },
            Sensitivity = new SensitivityOptions { Method = SensitivityMethod.None },
            Quantization = new QuantizationOptions { Omega = OmegaKind.Sensitivity, Compensation = CompensationKind.None, Budget = new BudgetOptions { CompressionRatio = 16 } },
            Pruning = new PruningOptions { Sparsity = 0.5 },
            Accuracy = new AccuracyOptions { MaxDrop = 100 },
            Finetune = finetune,
        });

    private PipelineOptions Options(string output) => new(_folder.File(output), "Finetune");
}
