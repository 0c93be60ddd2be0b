using System.Text.Json;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Commands;

public sealed class ValidateCommandTests : IDisposable
{
    private const string Policy = """
        version: 1
        models:
          - path: lenet5.onnx
        data:
          calibration: calib.npz
        quantization:
          bits: [2, 4, 8]
        """;

    private readonly TempFolder _folder = new();

    public ValidateCommandTests()
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "calib.npz");
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Accepts_a_valid_policy()
    {
        File.WriteAllText(_folder.File("quant.yaml"), Policy);

        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, "validate");

        Assert.Equal(0, exit);
        Assert.Empty(stderr);
        Assert.Contains("quant.yaml is valid (1 model)", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Rejects_a_misspelt_key_with_exit_code_1_naming_line_and_column()
    {
        File.WriteAllText(_folder.File("policy.yaml"), Policy.Replace("bits:", "bitz:", StringComparison.Ordinal));

        var (exit, _, stderr) = CliRunner.Run(_folder.Path, "validate", "--policy", "policy.yaml");

        Assert.Equal(1, exit);
        Assert.StartsWith("policy.yaml(7,3): error QT1102: Unknown key 'bitz' in quantization. Did you mean 'bits'?", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Json_reports_every_error_with_its_position()
    {
        File.WriteAllText(_folder.File("quant.yaml"), Policy.Replace("bits:", "bitz:", StringComparison.Ordinal).Replace("lenet5.onnx", "gone.onnx", StringComparison.Ordinal));

        var (exit, stdout, _) = CliRunner.Run(_folder.Path, "validate", "--json");

        Assert.Equal(1, exit);
        using var json = JsonDocument.Parse(stdout);
        Assert.False(json.RootElement.GetProperty("valid").GetBoolean());
        var errors = json.RootElement.GetProperty("errors").EnumerateArray().ToArray();
        Assert.Equal(["QT1102"], errors.Select(e => e.GetProperty("code").GetString()));
        Assert.Equal(7, errors[0].GetProperty("line").GetInt32());
    }

    [Fact]
    public void A_missing_policy_file_is_QT1002()
    {
        var (exit, _, stderr) = CliRunner.Run(_folder.Path, "validate");

        Assert.Equal(1, exit);
        Assert.Contains("error QT1002", stderr, StringComparison.Ordinal);
        Assert.Contains("dotnet quant init", stderr, StringComparison.Ordinal);
    }
}
