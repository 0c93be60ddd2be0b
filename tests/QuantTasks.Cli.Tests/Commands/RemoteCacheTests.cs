using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Commands;

/// <summary>
/// The remote cache against a real nginx with WebDAV PUT: two checkouts in different folders with their own local
/// caches share results through it, and no server fault (down, refusing, silent, stopped mid-run, a tampered entry)
/// fails a run or gets a bad entry used.
/// </summary>
public sealed class RemoteCacheTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void A_second_checkout_elsewhere_is_served_from_the_remote_without_analysis_and_stats_count_the_hit()
    {
        using var server = new NginxServer();
        // Two clones of one repository: the same project folder name (it gives the loader's namespace), different paths.
        var first = Checkout("one/App");
        var second = Checkout("elsewhere/two/App");

        var one = Quantize(first, server.Url);
        var two = Quantize(second, server.Url);

        Assert.Equal(0, one.Exit);
        Assert.Equal(0, two.Exit);
        Assert.Single(server.Entries);
        using (var a = JsonDocument.Parse(one.Out))
        using (var b = JsonDocument.Parse(two.Out))
        {
            var modelA = a.RootElement.GetProperty("models")[0];
            var modelB = b.RootElement.GetProperty("models")[0];
            Assert.False(modelA.GetProperty("cache_hit").GetBoolean());
            Assert.True(modelA.GetProperty("stages").TryGetProperty("analyze", out _));
            Assert.True(modelB.GetProperty("cache_hit").GetBoolean());
            Assert.False(modelB.GetProperty("stages").TryGetProperty("analyze", out _));
            Assert.Equal(modelA.GetProperty("content_hash").GetString(), modelB.GetProperty("content_hash").GetString());
        }

        Assert.Equal(File.ReadAllBytes(Path.Combine(first, "out", "Digits.qtblob")), File.ReadAllBytes(Path.Combine(second, "out", "Digits.qtblob")));
        Assert.Equal(File.ReadAllText(Path.Combine(first, "out", "DigitsModel.g.cs")), File.ReadAllText(Path.Combine(second, "out", "DigitsModel.g.cs")));
        Assert.Contains("1 hits", two.Err, StringComparison.Ordinal);

        // The hit also filled the second checkout's local cache, and its ledger counted it.
        var stats = CliRunner.Run(second, "cache", "stats", "--json", "--cache-dir", "cache", "--cache-url", server.Url);
        Assert.Equal(0, stats.Exit);
        using var json = JsonDocument.Parse(stats.Out);
        Assert.Equal(1, json.RootElement.GetProperty("local").GetProperty("entries").GetInt32());
        Assert.Equal(1, json.RootElement.GetProperty("remote").GetProperty("entries").GetInt32());
        var history = Assert.Single(json.RootElement.GetProperty("history").EnumerateArray().ToArray());
        Assert.Equal(1, history.GetProperty("hits").GetInt32());
        Assert.Equal(1.0, history.GetProperty("hit_rate").GetDouble());
    }

    [Fact]
    public void Read_only_mode_reads_but_uploads_nothing()
    {
        using var server = new NginxServer();

        var run = Quantize(Checkout("pr"), server.Url, "--cache-read-only");

        Assert.Equal(0, run.Exit);
        Assert.Empty(server.Entries);
        var log = File.ReadAllText(server.AccessLog);
        Assert.Contains("\"GET /quanttasks/v1/", log, StringComparison.Ordinal);
        Assert.DoesNotContain("\"PUT ", log, StringComparison.Ordinal);
        Assert.Contains("read-only", run.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void A_tampered_entry_on_the_server_is_refused_with_QT1010_and_the_model_computed_again()
    {
        using var server = new NginxServer();
        var first = Checkout("one/App");
        Assert.Equal(0, Quantize(first, server.Url).Exit);
        var entry = Assert.Single(server.Entries);
        var bytes = File.ReadAllBytes(entry);
        bytes[^10] ^= 0x01; // one bit of the report
        File.WriteAllBytes(entry, bytes);

        var second = Checkout("two/App");
        var run = Quantize(second, server.Url);

        Assert.Equal(0, run.Exit);
        Assert.Contains("warning QT1010", run.Err, StringComparison.Ordinal);
        Assert.Contains("SHA-256", run.Err, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(run.Out);
        Assert.False(json.RootElement.GetProperty("models")[0].GetProperty("cache_hit").GetBoolean());
        Assert.Equal(File.ReadAllBytes(Path.Combine(first, "out", "Digits.qtblob")), File.ReadAllBytes(Path.Combine(second, "out", "Digits.qtblob")));
    }

    [Fact]
    public void A_server_that_refuses_connections_gives_QT1009_and_the_run_succeeds()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        var run = Quantize(Checkout("offline"), $"http://127.0.0.1:{port}/");

        Assert.Equal(0, run.Exit);
        Assert.Single(Warnings(run.Err, "QT1009")); // asked once, then left alone for the rest of the run
        Assert.True(File.Exists(_folder.File("offline/out/Digits.qtblob")));
    }

    [Fact]
    public void A_server_that_never_answers_times_out_with_QT1009_and_the_run_succeeds()
    {
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start(); // accepts connections (the backlog) and never says a word
        var url = $"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}/";

        var run = Quantize(Checkout("slow"), url, "--cache-timeout", "1");

        Assert.Equal(0, run.Exit);
        Assert.Contains("no answer within 1 s", Assert.Single(Warnings(run.Err, "QT1009")), StringComparison.Ordinal);
        Assert.True(File.Exists(_folder.File("slow/out/Digits.qtblob")));
    }

    [Fact]
    public void A_server_stopped_in_the_middle_of_a_run_leaves_it_green()
    {
        using var server = new NginxServer();
        var checkout = Checkout("middle");

        // The lookup happens when the model is loaded; the upload only after the analysis and search, seconds
        // later. The run and the watch each get a thread of their own: on the thread pool, busy with the other
        // test classes' blocking runs, the watch's continuations were once late enough for the upload to land.
        (int Exit, string Out, string Err) result = default;
        var run = new Thread(() => result = Quantize(checkout, server.Url)) { IsBackground = true };
        run.Start();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (run.IsAlive && DateTime.UtcNow < deadline
            && !(File.Exists(server.AccessLog) && File.ReadAllText(server.AccessLog).Contains("GET /quanttasks/v1/", StringComparison.Ordinal)))
        {
            Thread.Sleep(5);
        }

        Assert.True(run.IsAlive, "the run ended before its lookup was seen: nothing was stopped in the middle");
        server.Stop();
        run.Join();

        Assert.Equal(0, result.Exit);
        Assert.Empty(server.Entries);
        Assert.Contains("warning QT1009", result.Err, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(checkout, "out", "Digits.qtblob")));
    }

    [Fact]
    public void Push_uploads_local_entries_and_pull_fetches_them_into_another_cache()
    {
        using var server = new NginxServer();
        var first = Checkout("first");
        Assert.Equal(0, CliRunner.Run(first, "quantize", "--json", "--out", "out", "--cache-dir", "cache").Exit);

        var push = CliRunner.Run(first, "cache", "push", "--cache-dir", "cache", "--cache-url", server.Url);
        var again = CliRunner.Run(first, "cache", "push", "--cache-dir", "cache", "--cache-url", server.Url);
        var pull = CliRunner.Run(first, "cache", "pull", "--cache-dir", "other", "--cache-url", server.Url);

        Assert.Equal(0, push.Exit);
        Assert.Contains("1 entries uploaded", push.Out, StringComparison.Ordinal);
        Assert.Contains("0 entries uploaded", again.Out, StringComparison.Ordinal);
        Assert.Contains("1 already there", again.Out, StringComparison.Ordinal);
        Assert.Equal(0, pull.Exit);
        Assert.Contains("1 entries downloaded", pull.Out, StringComparison.Ordinal);
        var list = CliRunner.Run(first, "cache", "list", "--json", "--cache-dir", "other");
        using var json = JsonDocument.Parse(list.Out);
        var entry = Assert.Single(json.RootElement.GetProperty("entries").EnumerateArray().ToArray());
        Assert.True(entry.GetProperty("valid").GetBoolean());
    }

    [Fact]
    public void A_url_with_credentials_is_refused_without_echoing_them()
    {
        var run = Quantize(Checkout("creds"), "http://user:hunter2@127.0.0.1:1/");

        Assert.Equal(1, run.Exit);
        Assert.Contains("QT1001", run.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", run.Err + run.Out, StringComparison.Ordinal);
    }

    private static string[] Warnings(string stderr, string code) =>
        stderr.Split('\n').Where(l => l.Contains($"warning {code}", StringComparison.Ordinal)).ToArray();

    private static (int Exit, string Out, string Err) Quantize(string checkout, string url, params string[] more) =>
        CliRunner.Run(checkout, ["quantize", "--json", "--out", "out", "--cache-dir", "cache", "--cache-url", url, .. more]);

    /// <summary>A project folder of its own: the model, the evaluation digits and a policy that analyses.</summary>
    private string Checkout(string name)
    {
        var folder = _folder.File(name);
        Directory.CreateDirectory(folder);
        File.Copy(Fixtures.Model("mlp.onnx"), Path.Combine(folder, "mlp.onnx"));
        File.Copy(Fixtures.Data("digits-test.npz"), Path.Combine(folder, "test.npz"));
        File.Copy(Fixtures.Data("digits-calibration.npz"), Path.Combine(folder, "calibration.npz"));
        File.WriteAllText(Path.Combine(folder, "quant.yaml"), """
            version: 1
            models:
              - path: mlp.onnx
                name: Digits
            data:
              calibration: calibration.npz
              evaluation: test.npz
            sensitivity:
              method: trace
              samples: 64
              max_iterations: 20
            quantization:
              bits: [2, 3, 4, 6]
              budget:
                average_bits: 4
            accuracy:
              max_drop: 100
            """);
        return folder;
    }
}
