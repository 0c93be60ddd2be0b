using Microsoft.Build.Framework;

namespace QuantTasks.Build.Tests.Tasks;

public sealed class QuantCompressTests
{
    [Theory]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("NaN")]
    [InlineData("Infinity")]
    [InlineData("3601")]
    [InlineData("soon")]
    public void A_cache_timeout_that_is_not_a_sensible_number_of_seconds_stops_the_task_before_the_engine_runs(string timeout)
    {
        var folder = Directory.CreateTempSubdirectory("quanttasks-task-");
        try
        {
            var policy = Path.Combine(folder.FullName, "quant.yaml");
            File.WriteAllText(policy, "version: 1\n");
            File.WriteAllBytes(Path.Combine(folder.FullName, "dotnet-quant.dll"), []); // never started: the check comes first
            var engine = new FakeBuildEngine();
            var task = new QuantCompress
            {
                BuildEngine = engine,
                PolicyPath = policy,
                OutputDirectory = Path.Combine(folder.FullName, "out"),
                ManifestPath = Path.Combine(folder.FullName, "out", "manifest.json"),
                EngineDirectory = folder.FullName,
                CacheTimeout = timeout,
            };

            Assert.False(task.Execute());

            var error = Assert.Single(engine.Errors);
            Assert.Equal("QT1001", error.Code);
            Assert.Contains(timeout, error.Message, StringComparison.Ordinal);
            Assert.False(Directory.Exists(Path.Combine(folder.FullName, "out")));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    /// <summary>
    /// MSBuild's canonical-error parser takes "origin: words error : text" for an error: a note's wording must not
    /// fail the build, while the engine's own QT diagnostics keep their code, file and line.
    /// </summary>
    [Fact]
    public void Only_the_engines_QT_diagnostics_become_errors_and_warnings_and_every_other_line_a_message()
    {
        var engine = new FakeBuildEngine();
        var task = new QuantCompress { BuildEngine = engine };

        task.LogEngineLine("Digits: search chose by calibrated output error : 0.0123 assumed", MessageImportance.Normal);
        task.LogEngineLine("Digits: warning : no accuracy gate protects this result", MessageImportance.Normal);
        task.LogEngineLine("/src/quant.yaml(7,5): error QT1102: quantization.bits must be a list of integers", MessageImportance.Normal);
        task.LogEngineLine("dotnet-quant: warning QT4101: no evaluation data: no gate protects the result", MessageImportance.Normal);

        var error = Assert.Single(engine.Errors);
        Assert.Equal("QT1102", error.Code);
        Assert.Equal("/src/quant.yaml", error.File);
        Assert.Equal(7, error.LineNumber);
        var warning = Assert.Single(engine.Warnings);
        Assert.Equal("QT4101", warning.Code);
        Assert.Equal(2, engine.Messages.Count);
        Assert.Contains(engine.Messages, m => m.Message == "Digits: search chose by calibrated output error : 0.0123 assumed");
    }
}
