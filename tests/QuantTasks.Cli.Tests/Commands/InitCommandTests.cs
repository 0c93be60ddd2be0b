using QuantTasks.Policy;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Commands;

public sealed class InitCommandTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Writes_a_commented_policy_with_the_schema_line_that_validates()
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"), "digits.onnx");

        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, "init");

        Assert.Equal(0, exit);
        Assert.Empty(stderr);
        Assert.Contains("5 quantizable tensors", stdout, StringComparison.Ordinal);
        var text = File.ReadAllText(_folder.File("quant.yaml"));
        Assert.StartsWith("# yaml-language-server: $schema=./quant.schema.json\n", text, StringComparison.Ordinal);
        Assert.Contains("path: digits.onnx", text, StringComparison.Ordinal);
        Assert.Equal(PolicySchema.Text, File.ReadAllText(_folder.File("quant.schema.json")));
        Assert.Equal(0, CliRunner.Run(_folder.Path, "validate").Exit);
    }

    [Fact]
    public void With_calibration_data_the_policy_compensates_and_prices_layer_output_errors()
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        Directory.CreateDirectory(_folder.File("data"));
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "data/calib.npz");

        var (exit, _, _) = CliRunner.Run(_folder.Path, "init", "--model", "lenet5.onnx", "--calibration", "data/calib.npz");
        var policy = PolicyLoader.Load(_folder.File("quant.yaml")).Policy;

        Assert.Equal(0, exit);
        Assert.Equal(SensitivityMethod.None, policy.Sensitivity.Method);
        Assert.Equal(OmegaKind.OutputError, policy.Quantization.Omega);
        Assert.Equal(CompensationKind.Gptq, policy.Quantization.Compensation);
        Assert.Equal("data/calib.npz", policy.Data.Calibration);
    }

    [Fact]
    public void Refuses_to_replace_a_policy_without_force()
    {
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        File.WriteAllText(_folder.File("quant.yaml"), "# mine\n");

        var (exit, _, stderr) = CliRunner.Run(_folder.Path, "init");
        Assert.Equal(1, exit);
        Assert.Contains("error QT1003", stderr, StringComparison.Ordinal);
        Assert.Equal("# mine\n", File.ReadAllText(_folder.File("quant.yaml")));

        Assert.Equal(0, CliRunner.Run(_folder.Path, "init", "--force").Exit);
        Assert.NotEqual("# mine\n", File.ReadAllText(_folder.File("quant.yaml")));
    }

    [Fact]
    public void Without_a_model_and_with_none_in_the_folder_it_says_what_to_pass()
    {
        var (exit, _, stderr) = CliRunner.Run(_folder.Path, "init");

        Assert.Equal(1, exit);
        Assert.Contains("--model", stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(_folder.File("quant.yaml")));
    }
}
