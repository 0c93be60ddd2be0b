using System.Buffers.Binary;
using System.Globalization;
using Google.Protobuf;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Runtime.Format;
using QuantTasks.Tests;

namespace QuantTasks.Cli.Tests.Hostile;

/// <summary>The "wrong but not dangerous" cases: inputs that used to end as QT3001, leave output behind, or pass silently.</summary>
public sealed partial class HostileInputTests
{
    // ---- 7. coded errors where internal errors were ----

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void Non_finite_weights_are_a_coded_error_naming_the_tensor(float bad)
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var weight = model.Graph.Initializer.First(t => t.Dims.Count == 2);
        var values = model.ReadFloats(weight);
        values[7] = bad;
        SetFloats(weight, values);
        File.WriteAllBytes(_folder.File("nan.onnx"), model.Proto.ToByteArray());
        WritePolicy("nan.onnx", analysis: true);

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1208");
        Assert.Contains(weight.Name, result.Err, StringComparison.Ordinal);
        AssertNoOutput("out");
    }

    [Fact]
    public void Non_finite_calibration_values_are_a_coded_error()
    {
        var values = Enumerable.Repeat(0.5f, 4 * 784).ToArray();
        values[100] = float.NaN;
        NpzWriter.Write(_folder.File("nan.npz"), ("input", NpzWriter.Floats([4, 1, 28, 28], values)));
        WritePolicy("mlp.onnx", analysis: true, calibration: "nan.npz");

        AssertBadInput(Run("quantize", "--out", "out"), "QT1208");
        AssertNoOutput("out");
    }

    [Theory]
    [InlineData(57)]
    [InlineData(-1)]
    [InlineData(-100)]
    public void Labels_out_of_range_are_a_coded_error(long label)
    {
        var input = Enumerable.Repeat(0.25f, 4 * 784).ToArray();
        NpzWriter.Write(_folder.File("labels.npz"), ("input", NpzWriter.Floats([4, 1, 28, 28], input)), ("label", NpzWriter.Longs([1, 2, label, 3])));
        WritePolicy("mlp.onnx", analysis: true, calibration: "labels.npz");

        var result = Run("quantize", "--out", "out");

        AssertBadInput(result, "QT1306");
        Assert.Contains(label.ToString(CultureInfo.InvariantCulture), result.Err, StringComparison.Ordinal);
        AssertNoOutput("out");
        File.WriteAllText(_folder.File("quant.yaml"), File.ReadAllText(_folder.File("quant.yaml"))
            .Replace("calibration: labels.npz", "calibration: calib.npz", StringComparison.Ordinal)
            .Replace("evaluation: test.npz", "evaluation: labels.npz", StringComparison.Ordinal)
            .Replace("method: trace", "method: none", StringComparison.Ordinal));
        AssertBadInput(Run("quantize", "--out", "out"), "QT1306");
        AssertNoOutput("out");
    }

    [Fact]
    public void A_duplicate_npz_member_is_a_coded_error()
    {
        var input = NpzWriter.Floats([2, 1, 28, 28], new float[2 * 784]);
        NpzWriter.Write(_folder.File("twice.npz"), ("input", input), ("input", input));
        WritePolicy("mlp.onnx", analysis: true, calibration: "twice.npz");

        AssertBadInput(Run("quantize", "--out", "out"), "QT1301");
    }

    public static TheoryData<string, string> InvalidGraphs => new()
    {
        { "cycle", "QT1206" },
        { "undefined-input", "QT1206" },
        { "unknown-op", "QT1206" },
        { "no-opset", "QT1206" },
        { "string-weight", "legal" },
        { "float8-weight", "QT1206" },
    };

    [Theory]
    [MemberData(nameof(InvalidGraphs))]
    public void Graphs_onnx_runtime_rejects_are_coded_errors_under_quantize_and_eval(string kind, string code)
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var graph = model.Graph;
        var first = graph.Node[0];
        switch (kind)
        {
            case "cycle":
                first.Input[0] = graph.Node[^1].Output[0];
                break;
            case "undefined-input":
                first.Input[0] = "nothing_makes_this";
                break;
            case "unknown-op":
                graph.Node.Add(new NodeProto { OpType = "FrobnicateV9", Name = "frob", Input = { graph.Node[^1].Output[0] }, Output = { "frobbed" } });
                break;
            case "no-opset":
                model.Proto.OpsetImport.Clear();
                break;
            case "string-weight":
                graph.Initializer.Add(new TensorProto { Name = "words", DataType = 8, Dims = { 2 }, StringData = { ByteString.CopyFromUtf8("a"), ByteString.CopyFromUtf8("b") } });
                graph.Node.Add(new NodeProto { OpType = "Identity", Name = "words_id", Input = { "words" }, Output = { "words_out" } });
                break;
            case "float8-weight":
                graph.Initializer.Add(new TensorProto { Name = "f8", DataType = 17, Dims = { 4, 4 }, RawData = ByteString.CopyFrom(new byte[16]) });
                graph.Node.Add(new NodeProto { OpType = "Identity", Name = "f8_id", Input = { "f8" }, Output = { "f8_out" } });
                break;
        }

        File.WriteAllBytes(_folder.File("bad.onnx"), model.Proto.ToByteArray());
        WritePolicy("bad.onnx");

        if (code == "legal")
        {
            // A string initializer beside the float graph is legal ONNX: it is carried through and evaluated.
            Assert.Equal(0, Run("quantize", "--out", "out").Exit);
            Assert.Equal(0, Run("eval", "out/Digits.qtblob", "--data", "test.npz").Exit);
            return;
        }

        AssertBadInput(Run("quantize", "--out", "out"), code);
        AssertNoOutput("out");
        AssertBadInput(Run("eval", "bad.onnx", "--data", "test.npz"), code);
    }

    [Fact]
    public void An_element_count_that_overflows_is_a_coded_error_in_inspect()
    {
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        model.Graph.Initializer.Add(new TensorProto { Name = "huge", DataType = 1, Dims = { 1L << 31, 1L << 31 } });
        File.WriteAllBytes(_folder.File("huge.onnx"), model.Proto.ToByteArray());
        model.Graph.Initializer[^1].Dims.Add(1L << 31);
        File.WriteAllBytes(_folder.File("huger.onnx"), model.Proto.ToByteArray());

        AssertBadInput(Run("inspect", "huge.onnx"), "QT1204");
        AssertBadInput(Run("inspect", "huger.onnx"), "QT1204");
    }

    [Fact]
    public void An_external_data_offset_near_two_to_the_63_is_a_coded_error()
    {
        File.WriteAllBytes(_folder.File("w.bin"), new byte[1024]);
        var weight = WriteWithExternalWeight("offset.onnx", "w.bin");
        var model = OnnxModel.Load(_folder.File("mlp.onnx"));
        var copy = model.Graph.Initializer.First(t => t.Name == weight.Name);
        copy.ClearRawData();
        copy.DataLocation = TensorProto.Types.DataLocation.External;
        copy.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "w.bin" });
        copy.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = (long.MaxValue - 10).ToString(CultureInfo.InvariantCulture) });
        copy.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "100" });
        File.WriteAllBytes(_folder.File("offset.onnx"), model.Proto.ToByteArray());

        AssertBadInput(Run("inspect", "offset.onnx"), "QT1203");
    }

    [Fact]
    public void A_ratio_beyond_double_is_a_coded_error_at_its_line()
    {
        WritePolicy("mlp.onnx");
        File.WriteAllText(_folder.File("quant.yaml"), File.ReadAllText(_folder.File("quant.yaml"))
            .Replace("average_bits: 5", "compression_ratio: 1e400", StringComparison.Ordinal));

        var result = Run("validate");

        AssertBadInput(result, "QT1104");
        Assert.Contains("quant.yaml(", result.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void The_largest_max_size_is_legal_and_compresses()
    {
        WritePolicy("mlp.onnx");
        File.WriteAllText(_folder.File("quant.yaml"), File.ReadAllText(_folder.File("quant.yaml"))
            .Replace("average_bits: 5", "max_size: 9223372036854775807", StringComparison.Ordinal));

        Assert.Equal(0, Run("quantize", "--out", "out").Exit);
        Assert.True(File.Exists(_folder.File("out/Digits.qtblob")));
    }

    [Fact]
    public void A_nul_in_a_policy_path_is_a_coded_error()
    {
        File.WriteAllText(_folder.File("quant.yaml"), "version: 1\nmodels:\n  - path: \"mlp\\0.onnx\"\n");

        AssertBadInput(Run("validate"), "QT1104");
    }

    [Fact]
    public void Unwritable_outputs_are_QT1004_and_leave_nothing()
    {
        WritePolicy("mlp.onnx", evaluation: false);
        File.WriteAllText(_folder.File("file"), "a file where a folder belongs");

        AssertBadInput(Run("quantize", "--out", "file/out"), "QT1004");
        AssertBadInput(Run("quantize", "--out", "out", "--manifest", "file/m.txt"), "QT1004");
        Assert.Equal(0, Run("quantize", "--out", "good").Exit);
        AssertBadInput(Run("decode", "good/Digits.qtblob", "--out", "file/x.onnx"), "QT1004");
    }

    [Fact]
    public void Compensation_without_dampening_on_a_singular_layer_hessian_keeps_plain_rounding()
    {
        // 16 calibration digits for 784 inputs: every layer Hessian of the MLP's first layer is singular.
        WritePolicy("mlp.onnx");
        File.WriteAllText(_folder.File("quant.yaml"), File.ReadAllText(_folder.File("quant.yaml"))
            .Replace("  bits: [4]", "  bits: [4]\n  compensation: gptq\n  gptq:\n    dampening: 0\n    samples: 16", StringComparison.Ordinal));

        var (exit, _, stderr) = Run("quantize", "--out", "out");

        Assert.True(exit == 0, stderr);
        Assert.True(File.Exists(_folder.File("out/Digits.qtblob")));
    }

    // ---- 8. nothing left behind by a failed run ----

    [Fact]
    public void A_bad_output_name_leaves_nothing_behind()
    {
        WritePolicy("mlp.onnx");
        File.WriteAllText(_folder.File("quant.yaml"), File.ReadAllText(_folder.File("quant.yaml"))
            .Replace("name: Digits", "name: Digits\n    output: no_such_output", StringComparison.Ordinal));

        AssertBadInput(Run("quantize", "--out", "out"), "QT1104");
        AssertNoOutput("out");
    }

    [Fact]
    public void A_bad_evaluation_file_leaves_nothing_behind()
    {
        File.WriteAllBytes(_folder.File("test.npz"), [0x50, 0x4B, 1, 2, 3, 4, 5, 6]);
        WritePolicy("mlp.onnx");

        AssertBadInput(Run("quantize", "--out", "out"), "QT1304");
        AssertNoOutput("out");
    }

    // ---- 9 and 7. blobs: bytes appended, valid checksums around bad contents ----

    [Fact]
    public void Bytes_appended_to_a_blob_make_it_invalid_for_the_command_line_too()
    {
        var blob = GoodBlob();
        File.WriteAllBytes(_folder.File("long.qtblob"), [.. blob, 1, 2, 3]);

        AssertBadInput(Run("inspect", "long.qtblob"), "QT1501");
        AssertBadInput(Run("eval", "long.qtblob", "--data", "test.npz"), "QT1501");
    }

    public static TheoryData<string> CraftedBlobs => new()
    {
        "metadata-length", "empty-graph", "random-graph", "float16-entry", "zero-tensors", "million-channels",
    };

    [Theory]
    [MemberData(nameof(CraftedBlobs))]
    public void Blobs_with_valid_checksums_and_bad_contents_are_QT1501(string kind)
    {
        var sections = Sections(GoodBlob());
        switch (kind)
        {
            case "metadata-length":
                var metadata = sections[0].Bytes;
                BinaryPrimitives.WriteUInt32LittleEndian(metadata.AsSpan(4 + 2 + BinaryPrimitives.ReadUInt16LittleEndian(metadata.AsSpan(4))), 0xFFFFFFFF);
                break;
            case "empty-graph":
                sections[1] = (SectionKind.Graph, []);
                break;
            case "random-graph":
                var noise = new byte[sections[1].Bytes.Length];
                new Random(7).NextBytes(noise);
                sections[1] = (SectionKind.Graph, noise);
                break;
            case "float16-entry":
                var directory = sections[2].Bytes;
                var nameLength = BinaryPrimitives.ReadUInt16LittleEndian(directory.AsSpan(4));
                BinaryPrimitives.WriteInt32LittleEndian(directory.AsSpan(4 + 2 + nameLength), 10);
                break;
            case "zero-tensors":
                sections[2] = (SectionKind.TensorDirectory, [0, 0, 0, 0]);
                sections[3] = (SectionKind.Payload, []);
                break;
            case "million-channels":
                sections[2] = (SectionKind.TensorDirectory, MillionChannelDirectory(out var payload));
                sections[3] = (SectionKind.Payload, payload);
                break;
        }

        File.WriteAllBytes(_folder.File("crafted.qtblob"), BlobLayout.Assemble(new byte[32], sections));

        AssertBadInput(Run("eval", "crafted.qtblob", "--data", "test.npz"), "QT1501");
        AssertBadInput(Run("decode", "crafted.qtblob", "--out", "decoded.onnx"), "QT1501");
        Assert.False(File.Exists(_folder.File("decoded.onnx")));
    }

    // ---- 10. positions ----

    [Fact]
    public void A_tab_before_a_nested_key_is_reported_at_its_line()
    {
        File.WriteAllText(_folder.File("quant.yaml"), "version: 1\nmodels:\n  - path: mlp.onnx\nquantization:\n\tbits: [4]\n");

        var result = Run("validate");

        AssertBadInput(result, "QT1101");
        Assert.Contains("quant.yaml(5,1)", result.Err, StringComparison.Ordinal);
    }

    // ---- helpers ----

    private static void SetFloats(TensorProto tensor, float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        tensor.FloatData.Clear();
        tensor.RawData = ByteString.CopyFrom(bytes);
    }

    private byte[] GoodBlob()
    {
        WritePolicy("mlp.onnx", evaluation: false);
        Assert.Equal(0, Run("quantize", "--out", "good").Exit);
        return File.ReadAllBytes(_folder.File("good/Digits.qtblob"));
    }

    private static List<(SectionKind Kind, byte[] Bytes)> Sections(byte[] blob)
    {
        var count = BinaryPrimitives.ReadInt32LittleEndian(blob.AsSpan(12));
        var sections = new List<(SectionKind, byte[])>();
        for (var i = 0; i < count; i++)
        {
            var entry = blob.AsSpan(BlobFormat.HeaderSize + (i * BlobFormat.SectionEntrySize));
            var offset = (int)BinaryPrimitives.ReadInt64LittleEndian(entry[8..]);
            var length = (int)BinaryPrimitives.ReadInt64LittleEndian(entry[16..]);
            sections.Add(((SectionKind)BinaryPrimitives.ReadUInt32LittleEndian(entry), blob.AsSpan(offset, length).ToArray()));
        }

        return sections;
    }

    // One uniform 8-bit tensor of shape [2^23, 1], one channel per element: a 75 MB payload whose level table
    // would take 8.6 GB if it were expanded whole.
    private static byte[] MillionChannelDirectory(out byte[] payload)
    {
        const int channels = 1 << 23;
        var entry = new TensorEntry
        {
            Name = "fc1.weight",
            ElementType = 1,
            Dims = [channels, 1],
            Quantizer = QuantizerKind.Uniform,
            Bits = 8,
            Coder = CoderKind.Fixed,
            ChannelAxis = 0,
            Channels = channels,
            PayloadOffset = 0,
            Method = "uniform",
        };
        payload = new byte[(channels * 8L) + channels];
        for (var c = 0; c < channels; c++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(payload.AsSpan(c * 8), 0.01f);
        }

        entry.PayloadLength = payload.Length;
        var bytes = new List<byte> { 1, 0, 0, 0 };
        entry.Write(bytes);
        return [.. bytes];
    }
}
