using QuantTasks.Diagnostics;
using QuantTasks.Engine.Pipeline;
using QuantTasks.Engine.Pipeline.Stages;
using QuantTasks.Policy;
using QuantTasks.Tests;

namespace QuantTasks.Engine.Tests.Pipeline;

[CollectionDefinition(nameof(HessianSpillTests), DisableParallelization = true)]
public sealed class HessianSpillTestsRunAlone;

/// <summary>
/// Layer Hessians spilled to a scratch file (what a large network's run does) must give the blob of a run that
/// keeps them in memory, byte for byte, and leave nothing behind. The threshold is lowered for a small MobileNet-style model, so the test
/// runs alone: the setting is the process's.
/// </summary>
[Collection(nameof(HessianSpillTests))]
public sealed class HessianSpillTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Spilled_hessians_give_the_bytes_of_hessians_kept_in_memory_and_leave_no_scratch_file()
    {
        // Depthwise layers: one H per group, each spilled and read back on its own.
        _folder.Copy(Fixtures.Model("mobilenet-dw.onnx"), "mobile.onnx");
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "digits.npz");
        File.WriteAllText(_folder.File("quant.yaml"), """
            version: 1
            models: [{ path: mobile.onnx }]
            data: { calibration: digits.npz }
            quantization: { budget: { compression_ratio: 8 }, joint_check: { enabled: false } }
            """);

        (byte[] Blob, List<string> Notes, string Output) Run(long spillBytes, string output)
        {
            var saved = ActivationsStage.SpillBytes;
            ActivationsStage.SpillBytes = spillBytes;
            try
            {
                var notes = new List<string>();
                var result = new QuantizationPipeline(note: notes.Add).Run(PolicyLoader.Load(_folder.File("quant.yaml")), new PipelineOptions(_folder.File(output), "Tests"));
                return (File.ReadAllBytes(result.Models[0].BlobPath), notes, _folder.File(output));
            }
            finally
            {
                ActivationsStage.SpillBytes = saved;
            }
        }

        var memory = Run(long.MaxValue, "memory");
        var spilled = Run(0, "spilled");

        Assert.Equal(memory.Blob, spilled.Blob);
        Assert.DoesNotContain(memory.Notes, n => n.Contains("scratch file", StringComparison.Ordinal));
        Assert.Contains(spilled.Notes, n => n.Contains("wait in a scratch file", StringComparison.Ordinal));
        Assert.Empty(Directory.EnumerateFiles(spilled.Output, ".quant-scratch-*", SearchOption.AllDirectories));
        Assert.Equal(
            Directory.EnumerateFiles(memory.Output).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Directory.EnumerateFiles(spilled.Output).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    /// <summary>
    /// An output folder that cannot be made (a file stands where it would go): the spill is not an error, the
    /// Hessians stay in memory and a note says why; the run then fails where outputs are written, with the coded
    /// file-access error, and the file that stood in the way is untouched.
    /// </summary>
    [Fact]
    public void An_output_folder_that_cannot_be_made_keeps_the_hessians_in_memory_and_fails_only_where_outputs_are_written()
    {
        _folder.Copy(Fixtures.Model("mlp.onnx"));
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "digits.npz");
        File.WriteAllText(_folder.File("quant.yaml"), """
            version: 1
            models: [{ path: mlp.onnx }]
            data: { calibration: digits.npz }
            quantization: { budget: { compression_ratio: 8 }, joint_check: { enabled: false } }
            """);
        File.WriteAllText(_folder.File("blocker"), "not a folder");
        var notes = new List<string>();
        var saved = ActivationsStage.SpillBytes;
        ActivationsStage.SpillBytes = 0;
        try
        {
            var error = Assert.Throws<QuantException>(() => new QuantizationPipeline(note: notes.Add)
                .Run(PolicyLoader.Load(_folder.File("quant.yaml")), new PipelineOptions(_folder.File("blocker/out"), "Tests")));

            Assert.Equal(ErrorCode.FileAccess, error.Code);
        }
        finally
        {
            ActivationsStage.SpillBytes = saved;
        }

        Assert.Contains(notes, n => n.Contains("stay in memory", StringComparison.Ordinal));
        Assert.Equal("not a folder", File.ReadAllText(_folder.File("blocker")));
    }
}
