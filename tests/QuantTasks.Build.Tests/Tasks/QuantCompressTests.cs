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
}
