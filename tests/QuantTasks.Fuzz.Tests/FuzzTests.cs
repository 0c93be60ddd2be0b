using System.Globalization;
using Xunit.Abstractions;

namespace QuantTasks.Fuzz.Tests;

/// <summary>
/// Bounded fuzzing runs in CI (QUANTTASKS_FUZZ_SECONDS, default 20 s per target) and the replay of every committed
/// input. A finding fails the test, naming the saved input; move that file to tests/fuzz-corpus/TARGET/crashes/
/// once fixed, so that the replay keeps it fixed.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly Targets _targets = new();

    public static TheoryData<string> TargetNames => [.. Targets.Names];

    public static TheoryData<string, string> CorpusFiles
    {
        get
        {
            var data = new TheoryData<string, string>();
            foreach (var target in Targets.Names)
            {
                foreach (var file in Corpus.Files(target))
                {
                    data.Add(target, Path.GetRelativePath(Corpus.Folder(target), file));
                }
            }

            return data;
        }
    }

    public void Dispose() => _targets.Dispose();

    [Theory]
    [MemberData(nameof(TargetNames))]
    public void Fuzzing_finds_no_crash_hang_or_unbounded_allocation(string target)
    {
        var seconds = double.Parse(Environment.GetEnvironmentVariable("QUANTTASKS_FUZZ_SECONDS") ?? "20", CultureInfo.InvariantCulture);
        var seed = int.Parse(Environment.GetEnvironmentVariable("QUANTTASKS_FUZZ_SEED") ?? "1", CultureInfo.InvariantCulture);
        var seeds = Corpus.Files(target).Select(File.ReadAllBytes).ToArray();
        var fuzzer = new Fuzzer(_targets.For(target), seeds, seed, TimeSpan.FromSeconds(30));

        var stats = fuzzer.Run(TimeSpan.FromSeconds(seconds), Path.Combine(AppContext.BaseDirectory, "fuzz-findings", target));

        output.WriteLine(stats.ToString());
        File.WriteAllText(Path.Combine(AppContext.BaseDirectory, $"fuzz-stats-{target}.txt"), stats + "\n");
        Assert.True(stats.Finding is null, stats.Finding);
        Assert.True(stats.Executions > seeds.Length, $"only {stats.Executions} executions ran");
        Assert.True(stats.Outcomes >= 3, $"every input ended the same few ways ({stats.Outcomes}); the mutator reaches nothing");
    }

    [Theory]
    [MemberData(nameof(CorpusFiles))]
    public void Every_committed_input_ends_as_a_result_or_a_coded_error(string target, string file)
    {
        var fuzzer = new Fuzzer(_targets.For(target), [], 0, TimeSpan.FromSeconds(30));

        var finding = fuzzer.Execute(File.ReadAllBytes(Path.Combine(Corpus.Folder(target), file)), Path.Combine(AppContext.BaseDirectory, "fuzz-findings", target));

        Assert.True(finding is null, finding);
    }
}
