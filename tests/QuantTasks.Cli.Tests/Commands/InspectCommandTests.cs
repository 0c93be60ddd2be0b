using System.Text.Json;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Commands;

public class InspectCommandTests
{
    [Fact]
    public void Json_lists_exactly_the_five_LeNet_weights_with_their_parameter_counts()
    {
        var (exit, stdout, stderr) = CliRunner.Run(Fixtures.Root, "inspect", "models/lenet5.onnx", "--json");

        Assert.Equal(0, exit);
        Assert.Empty(stderr);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal("models/lenet5.onnx", root.GetProperty("path").GetString());
        Assert.Equal("onnx", root.GetProperty("format").GetString());
        Assert.Equal(17, root.GetProperty("opset").GetInt32());
        var input = root.GetProperty("inputs").EnumerateArray().Single();
        Assert.Equal("input", input.GetProperty("name").GetString());
        Assert.Equal("[\"batch\",1,28,28]", JsonSerializer.Serialize(input.GetProperty("shape")));
        var tensors = root.GetProperty("tensors").EnumerateArray().ToArray();
        Assert.Equal(["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"], tensors.Select(t => t.GetProperty("name").GetString()));
        Assert.Equal([150L, 2400, 48000, 10080, 840], tensors.Select(t => t.GetProperty("params").GetInt64()));
        Assert.Equal([600L, 9600, 192000, 40320, 3360], tensors.Select(t => t.GetProperty("bytes").GetInt64()));
        Assert.Equal(["Conv", "Conv", "Gemm", "Gemm", "Gemm"], tensors.Select(t => t.GetProperty("op").GetString()));
        Assert.Equal("[120,400]", JsonSerializer.Serialize(tensors[2].GetProperty("shape")));
    }

    [Fact]
    public void Json_lists_weights_held_in_Constant_nodes()
    {
        var (exit, stdout, _) = CliRunner.Run(Fixtures.Root, "inspect", "models/lenet5-constants.onnx", "--json");

        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal(
            ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"],
            json.RootElement.GetProperty("tensors").EnumerateArray().Select(t => t.GetProperty("name").GetString()));
    }

    [Fact]
    public void The_table_for_people_shows_each_tensor_and_the_totals()
    {
        var (exit, stdout, _) = CliRunner.Run(Fixtures.Root, "inspect", "models/mlp.onnx");

        Assert.Equal(0, exit);
        Assert.Contains("fc1.weight", stdout, StringComparison.Ordinal);
        Assert.Contains("256 x 784", stdout, StringComparison.Ordinal);
        Assert.Contains("3 tensors", stdout, StringComparison.Ordinal);
        Assert.Contains("234,752", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void A_truncated_model_exits_1_with_QT1201_and_no_stack_trace()
    {
        using var temp = new TempFolder();
        var bytes = File.ReadAllBytes(Fixtures.Model("lenet5.onnx"));
        File.WriteAllBytes(temp.File("cut.onnx"), bytes[..1000]);

        var (exit, stdout, stderr) = CliRunner.Run(temp.Path, "inspect", "cut.onnx", "--json");

        Assert.Equal(1, exit);
        Assert.Empty(stdout);
        Assert.StartsWith("cut.onnx: error QT1201: ", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Verbose_adds_the_stack_trace()
    {
        var (exit, _, stderr) = CliRunner.Run(Fixtures.Root, "inspect", "models/missing.onnx", "--verbose");

        Assert.Equal(1, exit);
        Assert.Contains("error QT1002", stderr, StringComparison.Ordinal);
        Assert.Contains("   at ", stderr, StringComparison.Ordinal);
    }
}
