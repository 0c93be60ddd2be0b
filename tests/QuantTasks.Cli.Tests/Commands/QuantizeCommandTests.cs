using System.Text.Json;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Commands;

/// <summary>quantize, then what the other commands do with its blob.</summary>
public sealed class QuantizeCommandTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public QuantizeCommandTests()
    {
        _folder.Copy(Fixtures.Model("mlp.onnx"));
        _folder.Copy(Fixtures.Data("digits-test.npz"), "test.npz");
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Quantize_writes_the_report_as_json_and_the_blob_evaluates_like_the_decoded_model()
    {
        WritePolicy(bits: 4, maxDrop: 1);

        var (exit, stdout, _) = CliRunner.Run(_folder.Path, "quantize", "--json", "--out", "out");

        Assert.Equal(0, exit);
        using var report = JsonDocument.Parse(stdout);
        var model = report.RootElement.GetProperty("models")[0];
        Assert.True(model.GetProperty("accuracy").GetProperty("passed").GetBoolean());
        Assert.True(File.Exists(_folder.File("out/Digits.qtblob")));
        Assert.True(File.Exists(_folder.File("out/DigitsModel.g.cs")));

        var blobEval = CliRunner.Run(_folder.Path, "eval", "out/Digits.qtblob", "--data", "test.npz", "--json");
        Assert.Equal(0, CliRunner.Run(_folder.Path, "decode", "out/Digits.qtblob", "--out", "decoded.onnx").Exit);
        var decodedEval = CliRunner.Run(_folder.Path, "eval", "decoded.onnx", "--data", "test.npz", "--json");

        Assert.Equal(0, blobEval.Exit);
        Assert.Equal(blobEval.Out, decodedEval.Out);
        using var value = JsonDocument.Parse(blobEval.Out);
        Assert.Equal(model.GetProperty("accuracy").GetProperty("quantized").GetDouble(), value.RootElement.GetProperty("value").GetDouble(), 3);
        Assert.Equal(2000, value.RootElement.GetProperty("samples").GetInt32());
    }

    [Fact]
    public void A_second_run_comes_from_the_cache_with_the_same_bytes_and_cache_list_and_clear_manage_it()
    {
        WritePolicy(bits: 3, maxDrop: 100);
        var cache = _folder.File("cache");

        var first = CliRunner.Run(_folder.Path, "quantize", "--json", "--out", "a", "--cache-dir", cache);
        var second = CliRunner.Run(_folder.Path, "quantize", "--json", "--out", "b", "--cache-dir", cache);

        Assert.Equal(0, first.Exit);
        Assert.Equal(0, second.Exit);
        using (var one = JsonDocument.Parse(first.Out))
        using (var two = JsonDocument.Parse(second.Out))
        {
            Assert.False(one.RootElement.GetProperty("models")[0].GetProperty("cache_hit").GetBoolean());
            Assert.True(two.RootElement.GetProperty("models")[0].GetProperty("cache_hit").GetBoolean());
            Assert.Equal(one.RootElement.GetProperty("models")[0].GetProperty("content_hash").GetString(),
                two.RootElement.GetProperty("models")[0].GetProperty("content_hash").GetString());
        }

        Assert.Equal(File.ReadAllBytes(_folder.File("a/Digits.qtblob")), File.ReadAllBytes(_folder.File("b/Digits.qtblob")));
        Assert.Equal(File.ReadAllText(_folder.File("a/DigitsModel.g.cs")), File.ReadAllText(_folder.File("b/DigitsModel.g.cs")));

        var list = CliRunner.Run(_folder.Path, "cache", "list", "--json", "--cache-dir", cache);
        Assert.Equal(0, list.Exit);
        using (var entries = JsonDocument.Parse(list.Out))
        {
            var entry = Assert.Single(entries.RootElement.GetProperty("entries").EnumerateArray().ToArray());
            Assert.Equal("Digits", entry.GetProperty("model").GetString());
            Assert.True(entry.GetProperty("valid").GetBoolean());
        }

        var clear = CliRunner.Run(_folder.Path, "cache", "clear", "--cache-dir", cache);
        Assert.Equal(0, clear.Exit);
        Assert.Contains("Removed 1 entries", clear.Out, StringComparison.Ordinal);
        var third = CliRunner.Run(_folder.Path, "quantize", "--json", "--out", "c", "--cache-dir", cache);
        using var three = JsonDocument.Parse(third.Out);
        Assert.False(three.RootElement.GetProperty("models")[0].GetProperty("cache_hit").GetBoolean());
    }

    [Fact]
    public void Without_evaluation_data_the_run_warns_QT2002_and_reports_fidelity_on_the_calibration_samples()
    {
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "calibration.npz");
        File.WriteAllText(_folder.File("quant.yaml"), """
            version: 1
            models:
              - path: mlp.onnx
                name: Digits
            data:
              calibration: calibration.npz
            sensitivity:
              method: none
            quantization:
              bits: [4]
              budget:
                average_bits: 5
            """);

        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, "quantize", "--json", "--out", "out", "--no-cache");

        Assert.Equal(0, exit);
        Assert.Contains("warning QT2002: Digits: no accuracy gate protects this model", stderr, StringComparison.Ordinal);
        using var report = JsonDocument.Parse(stdout);
        var model = report.RootElement.GetProperty("models")[0];
        Assert.False(model.TryGetProperty("accuracy", out _));
        var fidelity = model.GetProperty("fidelity");
        Assert.Equal("agreement", fidelity.GetProperty("metric").GetString());
        Assert.InRange(fidelity.GetProperty("value").GetDouble(), 90, 100);
        Assert.True(fidelity.GetProperty("samples").GetInt32() > 0);
        Assert.Contains("**No accuracy gate**", File.ReadAllText(_folder.File("out/report.md")), StringComparison.Ordinal);
    }

    [Fact]
    public void Inspect_describes_a_blob()
    {
        WritePolicy(bits: 4, maxDrop: 100);
        Assert.Equal(0, CliRunner.Run(_folder.Path, "quantize", "--out", "out").Exit);

        var (exit, stdout, _) = CliRunner.Run(_folder.Path, "inspect", "out/Digits.qtblob", "--json");

        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal("blob", json.RootElement.GetProperty("format").GetString());
        Assert.Equal(17, json.RootElement.GetProperty("opset").GetInt32());
        var tensors = json.RootElement.GetProperty("tensors").EnumerateArray().ToArray();
        Assert.Equal(["fc1.weight", "fc2.weight", "fc3.weight"], tensors.Select(t => t.GetProperty("name").GetString()));
        Assert.All(tensors, t => Assert.Equal(4, t.GetProperty("bits").GetInt32()));
        Assert.All(tensors, t => Assert.Equal("Gemm", t.GetProperty("op").GetString()));
    }

    [Fact]
    public void A_failed_accuracy_gate_exits_2_with_QT2001_after_writing_the_report()
    {
        WritePolicy(bits: 1, maxDrop: 0.1);

        var (exit, _, stderr) = CliRunner.Run(_folder.Path, "quantize", "--out", "out");

        Assert.Equal(2, exit);
        Assert.Contains("error QT2001", stderr, StringComparison.Ordinal);
        Assert.True(File.Exists(_folder.File("out/report.md")));
    }

    [Theory]
    [InlineData("decode", "--out", "x.onnx")]
    [InlineData("inspect")]
    [InlineData("eval", "--data", "test.npz")]
    public void A_corrupt_blob_exits_1_with_QT1501(string command, params string[] rest)
    {
        WritePolicy(bits: 4, maxDrop: 100);
        Assert.Equal(0, CliRunner.Run(_folder.Path, "quantize", "--out", "out").Exit);
        var bytes = File.ReadAllBytes(_folder.File("out/Digits.qtblob"));
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(_folder.File("bad.qtblob"), bytes);

        var (exit, _, stderr) = CliRunner.Run(_folder.Path, [command, "bad.qtblob", .. rest]);

        Assert.Equal(1, exit);
        Assert.StartsWith("bad.qtblob: error QT1501: ", stderr, StringComparison.Ordinal);
        Assert.Contains("checksum", stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(_folder.File("x.onnx")));
    }

    [Fact]
    public void A_cancelled_run_exits_130_and_writes_nothing()
    {
        WritePolicy(bits: 4, maxDrop: 100);
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();

        var (exit, _, stderr) = CliRunner.Run(_folder.Path, cancel.Token, "quantize", "--out", "out");

        Assert.Equal(130, exit);
        Assert.Contains("cancelled", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_folder.File("out")));
    }

    private void WritePolicy(int bits, double maxDrop) =>
        File.WriteAllText(_folder.File("quant.yaml"), $"""
            version: 1
            models:
              - path: mlp.onnx
                name: Digits
            data:
              evaluation: test.npz
            sensitivity:
              method: none
            quantization:
              bits: [{bits}]
              budget:
                average_bits: {bits + 1}
            accuracy:
              max_drop: {maxDrop.ToString(System.Globalization.CultureInfo.InvariantCulture)}
            """);
}
