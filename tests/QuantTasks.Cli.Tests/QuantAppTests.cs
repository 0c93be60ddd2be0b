namespace QuantTasks.Cli.Tests;

public class QuantAppTests
{
    [Theory]
    [InlineData("frobnicate")]
    [InlineData("inspect")]
    [InlineData("inspect", "a.onnx", "--no-such-option")]
    public void Usage_errors_exit_1_with_QT1001(params string[] args)
    {
        var (exit, _, stderr) = CliRunner.Run(Environment.CurrentDirectory, args);

        Assert.Equal(1, exit);
        Assert.Contains("error QT1001", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Help_lists_the_commands_that_work()
    {
        var (exit, stdout, _) = CliRunner.Run(Environment.CurrentDirectory, "--help");

        Assert.Equal(0, exit);
        Assert.Contains("inspect", stdout, StringComparison.Ordinal);
        Assert.Contains("validate", stdout, StringComparison.Ordinal);
        Assert.Contains("init", stdout, StringComparison.Ordinal);
    }
}
