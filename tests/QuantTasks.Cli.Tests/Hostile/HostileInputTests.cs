using System.Diagnostics;
using System.IO.Compression;
using Google.Protobuf;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Hostile;

/// <summary>
/// The inputs of the hostile-inputs review, each made here as an attacker or a careless user would: every one must
/// end as a QT1xxx error with exit 1 (or a correct result), name what is wrong, leave no output behind, and stay
/// within 10 s and 1 GB of managed allocation.
/// </summary>
public sealed partial class HostileInputTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public HostileInputTests()
    {
        _folder.Copy(Fixtures.Model("mlp.onnx"));
        _folder.Copy(Fixtures.Model("lenet5.onnx"));
        _folder.Copy(Fixtures.Data("digits-test.npz"), "test.npz");
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "calib.npz");
    }

    public void Dispose() => _folder.Dispose();

    // ---- 1. cache clear on a folder that is not a cache ----

    [Fact]
    public void Cache_clear_on_a_folder_that_is_not_a_cache_removes_nothing()
    {
        var precious = Directory.CreateDirectory(_folder.File("home/projects/src")).FullName;
        File.WriteAllText(Path.Combine(precious, "Program.cs"), "// mine");

        var result = Run("cache", "clear", "--cache-dir", _folder.File("home"));

        AssertBadInput(result, "QT1007");
        Assert.True(File.Exists(Path.Combine(precious, "Program.cs")));
    }

    [Fact]
    public void Cache_clear_through_the_environment_variable_on_a_foreign_folder_removes_nothing()
    {
        Directory.CreateDirectory(_folder.File("work/keep"));
        var previous = Environment.GetEnvironmentVariable("QUANTTASKS_CACHE_DIR");
        Environment.SetEnvironmentVariable("QUANTTASKS_CACHE_DIR", _folder.File("work"));
        try
        {
            AssertBadInput(Run("cache", "clear"), "QT1007");
        }
        finally
        {
            Environment.SetEnvironmentVariable("QUANTTASKS_CACHE_DIR", previous);
        }

        Assert.True(Directory.Exists(_folder.File("work/keep")));
    }

    [Fact]
    public void Cache_clear_in_a_real_cache_removes_only_its_own_entries_and_never_follows_links()
    {
        WritePolicy("mlp.onnx", evaluation: false);
        var cache = _folder.File("cache");
        Assert.Equal(0, Run("quantize", "--out", "out", "--cache-dir", cache).Exit);
        var outside = Directory.CreateDirectory(_folder.File("outside")).FullName;
        File.WriteAllText(Path.Combine(outside, "data.txt"), "keep");
        File.WriteAllText(Path.Combine(cache, "notes.txt"), "mine");
        var fanOut = Directory.EnumerateDirectories(Path.Combine(cache, "v1")).First();
        Directory.CreateSymbolicLink(Path.Combine(fanOut, new string('a', 64)), outside);

        var result = Run("cache", "clear", "--cache-dir", cache);

        Assert.Equal(0, result.Exit);
        Assert.Contains("Removed 1 entries", result.Out, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(outside, "data.txt")));
        Assert.True(File.Exists(Path.Combine(cache, "notes.txt")));
    }

    // ---- 2. external data through a symbolic link ----

    [Fact]
    public void External_data_behind_a_symbolic_link_out_of_the_folder_is_refused()
    {
        var secret = _folder.File("secret.bin");
        File.WriteAllBytes(secret, new byte[1 << 20]);
        Directory.CreateDirectory(_folder.File("model"));
        File.CreateSymbolicLink(_folder.File("model/leak.bin"), secret);
        var weight = WriteWithExternalWeight("model/mlp.onnx", "leak.bin");

        var inspect = Run("inspect", "model/mlp.onnx");

        AssertBadInput(inspect, "QT1202");
        Assert.Contains(weight.Name, inspect.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void External_data_behind_a_linked_folder_is_refused()
    {
        Directory.CreateDirectory(_folder.File("elsewhere"));
        File.WriteAllBytes(_folder.File("elsewhere/w.bin"), new byte[1 << 20]);
        Directory.CreateDirectory(_folder.File("model"));
        Directory.CreateSymbolicLink(_folder.File("model/sub"), _folder.File("elsewhere"));
        WriteWithExternalWeight("model/mlp.onnx", "sub/w.bin");

        AssertBadInput(Run("inspect", "model/mlp.onnx"), "QT1202");
    }

    // ---- 3. code injection through a model's file name ----

    [Theory]
    [InlineData("evil\n[assembly: System.Reflection.AssemblyTitle(\"pwned\")]\n#.onnx")]
    [InlineData("evil\r[assembly: System.Reflection.AssemblyTitle(\"pwned\")]\r#.onnx")]
    [InlineData("evil\u2028[assembly: System.Reflection.AssemblyTitle(\"pwned\")]\u2029#.onnx")]
    [InlineData("evil *\\u002f \" \\ <c> & \u0085.onnx")]
    public void A_model_file_name_never_becomes_code(string fileName)
    {
        File.Copy(_folder.File("mlp.onnx"), _folder.File(fileName));
        File.WriteAllText(_folder.File("quant.yaml"), $"""
            version: 1
            models:
              - path: "{YamlEscape(fileName)}"
                name: Evil
            sensitivity:
              method: none
            quantization:
              bits: [4]
              budget:
                average_bits: 5
            """);

        var result = Run("quantize", "--out", "out");

        Assert.Equal(0, result.Exit);
        var code = File.ReadAllText(_folder.File("out/EvilModel.g.cs"));
        var lines = code.Split('\n');
        Assert.DoesNotContain(lines, l => l.TrimStart().StartsWith("[assembly", StringComparison.Ordinal));
        Assert.DoesNotContain(code, c => c is '\r' or '\u2028' or '\u2029' or '\u0085');
        Assert.Equal(1, lines.Count(l => l.Contains("Generated by QuantTasks", StringComparison.Ordinal)));
        Assert.All(lines.Where(l => l.Contains("pwned", StringComparison.Ordinal)), l => Assert.StartsWith("//", l.TrimStart(), StringComparison.Ordinal));
    }

    [Fact]
    public void Tensor_names_with_quotes_and_newlines_stay_inside_their_literals()
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var weight = model.Graph.Initializer.First(t => t.Dims.Count == 2);
        const string hostile = "w\");\n}\nclass Injected { }\n//\"\\";
        foreach (var node in model.Graph.Node)
        {
            for (var i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i] == weight.Name)
                {
                    node.Input[i] = hostile;
                }
            }
        }

        weight.Name = hostile;
        File.WriteAllBytes(_folder.File("named.onnx"), model.Proto.ToByteArray());
        WritePolicy("named.onnx", evaluation: false);

        var result = Run("quantize", "--out", "out");

        Assert.Equal(0, result.Exit);
        var code = File.ReadAllText(_folder.File("out/DigitsModel.g.cs"));
        Assert.DoesNotContain("\nclass Injected", code, StringComparison.Ordinal);
        Assert.Contains("\"w\\\");\\u000a}\\u000aclass Injected { }\\u000a//\\\"\\\\\"", code, StringComparison.Ordinal);
    }

    // ---- 4. YAML that overflows the stack or grows without bound ----

    [Fact]
    public void A_recursive_alias_is_refused_at_its_line()
    {
        File.WriteAllText(_folder.File("quant.yaml"), "version: 1\nmodels: &m [*m]\n");

        var result = Run("validate");

        AssertBadInput(result, "QT1006");
        Assert.Contains("quant.yaml(2,", result.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_hundred_thousand_nested_brackets_do_not_overflow_the_stack()
    {
        File.WriteAllText(_folder.File("quant.yaml"), "version: 1\nmodels: " + new string('[', 200_000) + new string(']', 200_000) + "\n");

        AssertBadInput(Run("validate"), "QT1006");
    }

    [Fact]
    public void Nesting_deeper_than_64_is_a_coded_error()
    {
        File.WriteAllText(_folder.File("quant.yaml"), "version: 1\nmodels: " + new string('[', 65) + new string(']', 65) + "\n");

        AssertBadInput(Run("validate"), "QT1006");
    }

    [Fact]
    public void The_billion_laughs_are_stopped_by_the_node_budget()
    {
        var yaml = new System.Text.StringBuilder("version: 1\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (var i = 1; i < 9; i++)
        {
            yaml.Append(System.Globalization.CultureInfo.InvariantCulture, $"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n");
        }

        yaml.Append("models: *a8\n");
        File.WriteAllText(_folder.File("quant.yaml"), yaml.ToString());

        AssertBadInput(Run("validate"), "QT1006");
    }

    [Fact]
    public void A_policy_over_a_mebibyte_is_refused_before_parsing()
    {
        File.WriteAllText(_folder.File("quant.yaml"), "version: 1\n#" + new string('x', 2 << 20) + "\n");

        AssertBadInput(Run("validate"), "QT1006");
    }

    // ---- 5. graphs whose shapes do not fit must not reach libtorch ----

    [Fact]
    public void A_gemm_weight_whose_shape_does_not_fit_is_a_coded_error_not_an_abort()
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var gemm = model.Graph.Node.First(n => n.OpType == "Gemm");
        var weight = model.Graph.Initializer.First(t => t.Name == gemm.Input[1]);
        weight.Dims[0] += 1;
        weight.Dims[1] = weight.Dims[1] * (weight.Dims[0] - 1) / weight.Dims[0];
        var count = weight.Dims[0] * weight.Dims[1];
        weight.RawData = ByteString.CopyFrom(new byte[count * 4]);
        File.WriteAllBytes(_folder.File("bad.onnx"), model.Proto.ToByteArray());
        WritePolicy("bad.onnx", analysis: true);

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1206");
        Assert.Contains(gemm.Name, result.Err, StringComparison.Ordinal);
        AssertNoOutput("out");
        AssertBadInput(Run("analyze", "bad.onnx", "--data", "calib.npz", "--samples", "8", "--max-iterations", "4"), "QT1206");
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("257")]
    [InlineData("2147483647")]
    [InlineData("many")]
    public void A_sketch_rank_out_of_range_is_a_usage_error_before_any_analysis(string rank)
    {
        var result = Run("analyze", "lenet5.onnx", "--data", "calib.npz", "--samples", "8", "--sketch", rank);

        AssertBadInput(result, "QT1001");
        Assert.Contains("--sketch", result.Err, StringComparison.Ordinal);
        Assert.Empty(result.Out);
    }

    [Fact]
    public void A_duplicate_initializer_name_is_a_coded_error()
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var weight = model.Graph.Initializer.First(t => t.Dims.Count == 2);
        var twin = new TensorProto { Name = weight.Name, DataType = 1, Dims = { 3, 5 }, RawData = ByteString.CopyFrom(new byte[60]) };
        model.Graph.Initializer.Add(twin);
        File.WriteAllBytes(_folder.File("twin.onnx"), model.Proto.ToByteArray());
        WritePolicy("twin.onnx", analysis: true);

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1206");
        Assert.Contains(weight.Name, result.Err, StringComparison.Ordinal);
        AssertBadInput(Run("inspect", "twin.onnx"), "QT1206");
        AssertNoOutput("out");
    }

    // ---- 6. endless, hanging and exploding inputs ----

    [Fact]
    public void Dev_zero_as_calibration_data_is_refused_without_reading_it()
    {
        if (OperatingSystem.IsWindows())
        {
            return; // No /dev/zero; the FIFO and size cases below cover the same guarantee there.
        }

        WritePolicy("mlp.onnx", analysis: true, calibration: "/dev/zero");

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1005");
        Assert.Contains("quant.yaml(", result.Err, StringComparison.Ordinal);
        AssertNoOutput("out");
    }

    [Fact]
    public void A_fifo_as_the_model_does_not_hang()
    {
        if (!MakeFifo(_folder.File("pipe.onnx")))
        {
            return;
        }

        WritePolicy("pipe.onnx", evaluation: false);

        AssertBadInput(Run("quantize", "--out", "out"), "QT1005");
        AssertBadInput(Run("inspect", "pipe.onnx"), "QT1005");
        AssertNoOutput("out");
    }

    [Fact]
    public void A_fifo_as_external_data_does_not_hang()
    {
        if (!MakeFifo(_folder.File("w.bin")))
        {
            return;
        }

        WriteWithExternalWeight("ext.onnx", "w.bin");

        AssertBadInput(Run("inspect", "ext.onnx"), "QT1005");
    }

    [Fact]
    public void A_zip_bomb_npz_declaring_680000_samples_is_refused_before_it_expands()
    {
        // 680,000 digits of zeros: 2 GB of float32 that deflate squeezes into about 2 MB.
        const long samples = 680_000;
        using (var file = File.Create(_folder.File("bomb.npz")))
        using (var zip = new ZipArchive(file, ZipArchiveMode.Create))
        {
            using var member = zip.CreateEntry("input.npy", CompressionLevel.SmallestSize).Open();
            var header = NpzWriter.Npy("<f4", [samples, 1, 28, 28], []);
            member.Write(header);
            var zeros = new byte[1 << 20];
            for (long left = samples * 784 * 4; left > 0; left -= zeros.Length)
            {
                member.Write(zeros, 0, (int)Math.Min(zeros.Length, left));
            }
        }

        WritePolicy("lenet5.onnx", analysis: true, calibration: "bomb.npz");

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1006");
        Assert.Contains("bomb.npz", result.Err, StringComparison.Ordinal);
        AssertNoOutput("out");
    }

    [Fact]
    public void An_npy_header_that_declares_more_than_the_file_holds_allocates_nothing_for_it()
    {
        File.WriteAllBytes(_folder.File("big.npy"), NpzWriter.Npy("<f4", [1_000_000_000, 784], new byte[64]));
        WritePolicy("mlp.onnx", evaluation: false, calibration: "big.npy", analysis: true);

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1304");
        AssertNoOutput("out");
    }

    // ---- helpers ----

    /// <summary>Writes the MLP with its first weight matrix moved to external data at <paramref name="location"/>; returns that tensor.</summary>
    private TensorProto WriteWithExternalWeight(string target, string location)
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var weight = model.Graph.Initializer.First(t => t.Dims.Count == 2);
        weight.ClearRawData();
        weight.FloatData.Clear();
        weight.DataLocation = TensorProto.Types.DataLocation.External;
        weight.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        File.WriteAllBytes(_folder.File(target), model.Proto.ToByteArray());
        return weight;
    }

    private (int Exit, string Out, string Err) Run(params string[] args)
    {
        var (result, elapsed, allocated) = CliRunner.Measured(_folder.Path, CancellationToken.None, args);
        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"{string.Join(' ', args)} took {elapsed}.");
        Assert.True(allocated < 1L << 30, $"{string.Join(' ', args)} allocated {allocated:N0} bytes.");
        return result;
    }

    private static void AssertBadInput((int Exit, string Out, string Err) result, string code)
    {
        Assert.True(result.Exit == 1, $"exit {result.Exit}: {result.Err}");
        Assert.True(result.Err.Contains($"error {code}:", StringComparison.Ordinal), $"expected {code}: {result.Err}");
        Assert.DoesNotContain("QT3001", result.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Err, StringComparison.Ordinal);
    }

    private void AssertNoOutput(string folder)
    {
        var full = _folder.File(folder);
        Assert.True(!Directory.Exists(full) || !Directory.EnumerateFileSystemEntries(full).Any(),
            $"left behind: {string.Join(", ", Directory.Exists(full) ? Directory.EnumerateFileSystemEntries(full).Select(Path.GetFileName) : [])}");
    }

    private void WritePolicy(string model, bool evaluation = true, bool analysis = false, string calibration = "calib.npz") =>
        File.WriteAllText(_folder.File("quant.yaml"), $"""
            version: 1
            models:
              - path: {model}
                name: Digits
            data:
              calibration: {calibration}
            {(evaluation ? "  evaluation: test.npz" : "")}
            sensitivity:
              method: {(analysis ? "trace" : "none")}
              samples: 8
              max_iterations: 4
            quantization:
              bits: [4]
              budget:
                average_bits: 5
            accuracy:
              max_drop: 100
            """);

    private static string YamlEscape(string text) =>
        string.Concat(text.Select(c => c switch
        {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\u2028' => "\\L",
            '\u2029' => "\\P",
            '\u0085' => "\\N",
            _ => c.ToString(),
        }));

    private static bool MakeFifo(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return false;
        }

        using var mkfifo = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        mkfifo.WaitForExit();
        return mkfifo.ExitCode == 0;
    }
}
