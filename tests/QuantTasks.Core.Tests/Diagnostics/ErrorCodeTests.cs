using QuantTasks.Diagnostics;

namespace QuantTasks.Core.Tests.Diagnostics;

public class ErrorCodeTests
{
    [Fact]
    public void Every_code_is_documented_in_docs_errors_md()
    {
        var docs = File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "errors.md"));

        foreach (var code in Enum.GetValues<ErrorCode>())
        {
            Assert.Contains($"## {code.Format()}", docs, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(nameof(ErrorCode.PolicyUnknownKey), nameof(ExitCode.BadInput))]
    [InlineData(nameof(ErrorCode.OnnxUnreadable), nameof(ExitCode.BadInput))]
    [InlineData(nameof(ErrorCode.AccuracyGateFailed), nameof(ExitCode.AccuracyGateFailed))]
    [InlineData(nameof(ErrorCode.Internal), nameof(ExitCode.Internal))]
    public void The_thousands_digit_is_the_exit_code(string code, string exit) =>
        Assert.Equal(Enum.Parse<ExitCode>(exit), Enum.Parse<ErrorCode>(code).ExitCode());

    [Fact]
    public void Errors_print_in_MSBuilds_canonical_form()
    {
        var withLine = new QuantException(ErrorCode.PolicyUnknownKey, "Unknown key 'bitz'.", new SourceLocation("quant.yaml", 3, 5));
        var withFile = new QuantException(ErrorCode.OnnxUnreadable, "Truncated.", new SourceLocation("m.onnx"));
        var bare = new QuantException(ErrorCode.Usage, "No command.");

        Assert.Equal("quant.yaml(3,5): error QT1102: Unknown key 'bitz'.", withLine.ToCanonicalString());
        Assert.Equal("m.onnx: error QT1201: Truncated.", withFile.ToCanonicalString());
        Assert.Equal("dotnet-quant: error QT1001: No command.", bare.ToCanonicalString());
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "QuantTasks.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("The tests run outside the repository.");
    }
}
