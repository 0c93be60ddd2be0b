using System.Globalization;
using Xunit.Abstractions;

namespace QuantTasks.Fuzz.Tests;

/// <summary>
/// The replay of every committed input (the bounded fuzzing runs are in <see cref="TimedFuzzing"/>). A finding
/// fails the test, naming the saved input; move that file to tests/fuzz-corpus/TARGET/crashes/ once fixed, so that
/// the replay keeps it fixed.
/// </summary>
public sealed class FuzzTests : IDisposable
{
    private readonly Targets _targets = new();

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
    [MemberData(nameof(CorpusFiles))]
    public void Every_committed_input_ends_as_a_result_or_a_coded_error(string target, string file)
    {
        var fuzzer = new Fuzzer(_targets.For(target), [], 0, TimeSpan.FromSeconds(30));

        var finding = fuzzer.Execute(File.ReadAllBytes(Path.Combine(Corpus.Folder(target), file)), Path.Combine(AppContext.BaseDirectory, "fuzz-findings", target));

        Assert.True(finding is null, finding);
    }
}

/// <summary>
/// Bounded fuzzing runs in CI (QUANTTASKS_FUZZ_SECONDS, default 20 s per target). A run is one thread for a fixed
/// time, and xunit runs a class's cases one after another: the targets are split between two classes (alternate
/// names of <see cref="Targets.Names"/>, so a new target joins one), which xunit runs at once on two cores. Each
/// target still gets its full time.
/// </summary>
public abstract class TimedFuzzing(ITestOutputHelper output) : IDisposable
{
    private readonly Targets _targets = new();

    /// <summary>The targets of one half: those at even (0) or odd (1) places of <see cref="Targets.Names"/>.</summary>
    protected static TheoryData<string> Half(int half) => [.. Targets.Names.Where((_, i) => i % 2 == half)];

    public void Dispose()
    {
        _targets.Dispose();
        GC.SuppressFinalize(this);
    }

    protected void Fuzz(string target)
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
}

/// <summary>The first half of <see cref="TimedFuzzing"/>'s targets.</summary>
public sealed class TimedFuzzingFirstHalf(ITestOutputHelper output) : TimedFuzzing(output)
{
    public static TheoryData<string> Targets => Half(0);

    [Theory]
    [MemberData(nameof(Targets))]
    public void Fuzzing_finds_no_crash_hang_or_unbounded_allocation(string target) => Fuzz(target);
}

/// <summary>The second half of <see cref="TimedFuzzing"/>'s targets.</summary>
public sealed class TimedFuzzingSecondHalf(ITestOutputHelper output) : TimedFuzzing(output)
{
    public static TheoryData<string> Targets => Half(1);

    [Theory]
    [MemberData(nameof(Targets))]
    public void Fuzzing_finds_no_crash_hang_or_unbounded_allocation(string target) => Fuzz(target);
}
