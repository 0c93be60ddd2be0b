using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using QuantTasks.Diagnostics;
using QuantTasks.Runtime;

namespace QuantTasks.Fuzz.Tests;

/// <summary>One reader under test: it takes an input and either succeeds or throws the product's coded error.</summary>
/// <param name="Name">The corpus folder's name.</param>
/// <param name="Run">Reads the input; returns a short description of what it found (the outcome).</param>
/// <param name="Text">Whether the inputs are text (policies), mutated with a token dictionary as well.</param>
internal sealed record FuzzTarget(string Name, Func<byte[], string> Run, bool Text = false);

/// <summary>What a fuzzing run did.</summary>
internal sealed record FuzzStats(string Target, long Executions, int Seeds, int Corpus, int Outcomes, double Seconds, string? Finding)
{
    public override string ToString() => FormattableString.Invariant(
        $"{Target}: {Executions:N0} executions in {Seconds:0} s ({Executions / Math.Max(Seconds, 1e-9):N0}/s), {Seeds} seeds, corpus {Corpus}, {Outcomes} distinct outcomes{(Finding is null ? "" : ", FINDING " + Finding)}");
}

/// <summary>
/// A mutational fuzzer. Inputs are mutated from the corpus (bit flips, interesting integers, truncation, block
/// moves, splices, dictionary tokens); an input whose outcome (success, or the error code and the message's
/// first words) was not seen before joins the corpus, which steers the search into new code without
/// instrumentation. A finding is anything the contract forbids: an exception other than a QT1xxx/QT2xxx error
/// (or <see cref="QuantBlobException"/> from the app's reader), an execution slower than the hang limit, or more
/// managed allocation than the input can justify. Findings are saved so they become regression inputs.
/// </summary>
internal sealed class Fuzzer
{
    private static readonly long[] s_interesting =
    [
        0, 1, -1, 2, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095, 65535, 65536,
        int.MaxValue, int.MinValue, (long)int.MaxValue + 1, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 31, 1L << 32, 1L << 53, 1L << 62,
    ];

    private static readonly string[] s_tokens =
    [
        "[", "]", "{", "}", ", ", ": ", "- ", "\n", "\n  ", "\t", "&a ", "*a", "&b [*a, *a, *a]", "'", "\"", "#", "!!str ", "!!binary ", "<<: *a",
        "---\n", "...\n", "? ", "|\n  ", ">\n  ", "%YAML 1.2\n---\n", "1e400", "-1", "0", "9223372036854775807", "1e-400", ".nan", ".inf",
        "~", "null", "true", "0x10", "\u0000", "\u2028", "\ufeff", "version", "models", "path", "name", "namespace", "output", "data",
        "calibration", "evaluation", "sensitivity", "method", "loss", "samples", "quantization", "bits", "budget", "compression_ratio",
        "max_size", "average_bits", "keep_float", "overrides", "match", "pruning", "sparsity", "candidates", "encoding", "accuracy",
        "max_drop", "../../etc/passwd", "/dev/zero", "64KiB", "gemm.onnx", "input.npy",
    ];

    private readonly FuzzTarget _target;
    private readonly Random _random;
    private readonly List<byte[]> _corpus;
    private readonly HashSet<string> _outcomes = new(StringComparer.Ordinal);
    private readonly TimeSpan _hangLimit;

    public Fuzzer(FuzzTarget target, IReadOnlyList<byte[]> seeds, int seed, TimeSpan hangLimit)
    {
        _target = target;
        _random = new Random(seed);
        _corpus = [.. seeds];
        Seeds = seeds.Count;
        _hangLimit = hangLimit;
    }

    public int Seeds { get; }

    /// <summary>Fuzzes for <paramref name="duration"/> (or <paramref name="maxExecutions"/>); stops at the first finding.</summary>
    public FuzzStats Run(TimeSpan duration, string findingsFolder, long maxExecutions = long.MaxValue)
    {
        var clock = Stopwatch.StartNew();
        long executions = 0;
        foreach (var seed in _corpus.ToArray())
        {
            if (Execute(seed, findingsFolder) is { } finding)
            {
                return Stats(executions, clock, finding);
            }

            executions++;
        }

        while (clock.Elapsed < duration && executions < maxExecutions)
        {
            var input = Mutate(_corpus[_random.Next(_corpus.Count)]);
            var before = _outcomes.Count;
            if (Execute(input, findingsFolder) is { } finding)
            {
                return Stats(executions, clock, finding);
            }

            executions++;
            if (_outcomes.Count > before && _corpus.Count < 4096)
            {
                _corpus.Add(input);
            }
        }

        return Stats(executions, clock, null);
    }

    /// <summary>Runs one input; returns a description of the finding, or null when the contract held.</summary>
    public string? Execute(byte[] input, string findingsFolder)
    {
        string? outcome = null;
        Exception? failure = null;
        long allocated = 0;
        var worker = new Thread(() =>
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                outcome = "ok " + _target.Run(input);
            }
            catch (QuantException e) when ((int)e.Code < 3000)
            {
                outcome = e.Code.Format() + " " + Stem(e.Message);
            }
            catch (QuantBlobException e)
            {
                outcome = "blob " + Stem(e.Message);
            }
#pragma warning disable CA1031 // Every other exception is exactly what the fuzzer looks for.
            catch (Exception e)
#pragma warning restore CA1031
            {
                failure = e;
            }

            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }, maxStackSize: 16 << 20)
        { IsBackground = true };
        worker.Start();
        if (!worker.Join(_hangLimit))
        {
            return Save(input, findingsFolder, $"no result after {_hangLimit.TotalSeconds:0} s (a hang)");
        }

        if (failure is not null)
        {
            return Save(input, findingsFolder, $"{failure.GetType().Name}: {failure.Message}\n{failure.StackTrace}");
        }

        var allowance = (256L << 20) + (4096L * input.Length);
        if (allocated > allowance)
        {
            return Save(input, findingsFolder, FormattableString.Invariant($"allocated {allocated:N0} bytes for a {input.Length:N0}-byte input"));
        }

        _outcomes.Add(outcome!);
        return null;
    }

    public int Outcomes => _outcomes.Count;

    private FuzzStats Stats(long executions, Stopwatch clock, string? finding) =>
        new(_target.Name, executions, Seeds, _corpus.Count, _outcomes.Count, clock.Elapsed.TotalSeconds, finding);

    private static string Save(byte[] input, string folder, string what)
    {
        Directory.CreateDirectory(folder);
        var file = Path.Combine(folder, Convert.ToHexStringLower(SHA256.HashData(input))[..16] + ".input");
        File.WriteAllBytes(file, input);
        File.WriteAllText(file + ".txt", what);
        return $"{what.Split('\n')[0]} (input saved as {file})";
    }

    // The outcome's identity: the code and the message's first words, without names, numbers or paths.
    private static string Stem(string message)
    {
        var words = message.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Where(w => !w.Any(char.IsDigit) && !w.Contains('\'', StringComparison.Ordinal) && !w.Contains('/', StringComparison.Ordinal))
            .Take(5);
        return string.Join(' ', words);
    }

    private byte[] Mutate(byte[] parent)
    {
        var data = new List<byte>(parent);
        var steps = 1 + _random.Next(_random.Next(2) == 0 ? 2 : 8);
        for (var s = 0; s < steps; s++)
        {
            var choice = _random.Next(_target.Text ? 10 : 8);
            var at = data.Count == 0 ? 0 : _random.Next(data.Count);
            switch (choice)
            {
                case 0 when data.Count > 0:
                    data[at] ^= (byte)(1 << _random.Next(8));
                    break;
                case 1 when data.Count > 0:
                    data[at] = (byte)s_interesting[_random.Next(s_interesting.Length)];
                    break;
                case 2 when data.Count >= 8:
                    var value = s_interesting[_random.Next(s_interesting.Length)];
                    var width = new[] { 2, 4, 8 }[_random.Next(3)];
                    at = Math.Min(at, data.Count - width);
                    for (var i = 0; i < width; i++)
                    {
                        data[at + i] = (byte)(value >> (8 * i));
                    }

                    break;
                case 3 when data.Count > 1:
                    data.RemoveRange(at, Math.Min(data.Count - at, 1 + _random.Next(Math.Max(1, data.Count / 8))));
                    break;
                case 4 when data.Count > 0:
                    var length = Math.Min(data.Count - at, 1 + _random.Next(64));
                    data.InsertRange(_random.Next(data.Count), data.GetRange(at, length));
                    break;
                case 5:
                    data.Insert(at, (byte)_random.Next(256));
                    break;
                case 6 when data.Count > 0:
                    data.RemoveRange(at, data.Count - at); // truncation
                    break;
                case 7:
                    var other = _corpus[_random.Next(_corpus.Count)];
                    if (other.Length > 0)
                    {
                        var from = _random.Next(other.Length);
                        data.InsertRange(at, other.Skip(from).Take(1 + _random.Next(256)));
                    }

                    break;
                case 8 or 9:
                    data.InsertRange(at, Encoding.UTF8.GetBytes(s_tokens[_random.Next(s_tokens.Length)]));
                    break;
                default:
                    data.Add((byte)_random.Next(256));
                    break;
            }
        }

        return [.. data];
    }
}
