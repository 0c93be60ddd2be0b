using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Onnx;

public class OnnxModelTests
{
    [Fact]
    public void Reads_a_LeNet_exported_by_PyTorch()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));

        Assert.Equal(17, model.Opset);
        Assert.Equal(10, model.Graph.Initializer.Count);
        Assert.Equal(["input"], model.Graph.Input.Select(i => i.Name));
        Assert.Equal(150, model.ReadFloats(model.FindTensor("conv1.weight")!).Length);
    }

    [Theory]
    [InlineData("lenet5-opset9.onnx", 9)]
    [InlineData("lenet5-constants.onnx", 17)]
    public void Reads_other_opsets_and_layouts(string file, long opset)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));

        Assert.Equal(opset, model.Opset);
        Assert.Equal(Weights("lenet5.onnx", "fc2.weight"), model.ReadFloats(model.FindTensor("fc2.weight")!));
    }

    [Fact]
    public void Typed_fields_hold_the_same_values_as_raw_data()
    {
        var typed = OnnxModel.Load(Fixtures.Model("lenet5-typed.onnx"));
        var fc2 = typed.FindTensor("fc2.weight")!;
        var fc1 = typed.FindTensor("fc1.weight_f64")!;

        Assert.False(fc2.HasRawData);
        Assert.NotEmpty(fc2.FloatData);
        Assert.NotEmpty(fc1.DoubleData);
        Assert.Equal(Weights("lenet5.onnx", "fc2.weight"), typed.ReadFloats(fc2));
        Assert.Equal(Weights("lenet5.onnx", "fc1.weight"), typed.ReadFloats(fc1));
    }

    [Fact]
    public void Float16_weights_read_within_half_precision()
    {
        var half = OnnxModel.Load(Fixtures.Model("lenet5-fp16.onnx"));
        var stored = half.ReadFloats(half.FindTensor("conv2.weight_fp16")!);
        var original = Weights("lenet5.onnx", "conv2.weight");

        Assert.Equal((int)TensorProto.Types.DataType.Float16, half.FindTensor("conv2.weight_fp16")!.DataType);
        for (var i = 0; i < original.Length; i++)
        {
            Assert.Equal((float)(Half)original[i], stored[i]);
        }
    }

    [Fact]
    public void External_data_is_read_and_written_back_external()
    {
        using var temp = new TempFolder();
        var model = OnnxModel.Load(Fixtures.Model("lenet5-external.onnx"));
        var fc1 = model.FindTensor("fc1.weight")!;

        Assert.True(model.CameFromExternalData(fc1));
        Assert.Equal(Weights("lenet5.onnx", "fc1.weight"), model.ReadFloats(fc1));

        var written = temp.File("copy.onnx");
        model.Save(written);
        var reread = OnnxModel.Load(written);

        Assert.True(File.Exists(temp.File("lenet5-external.weights")));
        Assert.True(new FileInfo(written).Length < 10_000, "weights stay out of the .onnx file");
        Assert.Equal(model.Proto, reread.Proto);
        Assert.True(reread.CameFromExternalData(reread.FindTensor("fc1.weight")!));
    }

    [Theory]
    [InlineData("lenet5.onnx")]
    [InlineData("lenet5-opset9.onnx")]
    [InlineData("lenet5-constants.onnx")]
    [InlineData("lenet5-fp16.onnx")]
    [InlineData("lenet5-typed.onnx")]
    [InlineData("lenet5-external.onnx")]
    [InlineData("mlp.onnx")]
    public void A_model_written_back_unchanged_is_equal_and_runs_identically_in_OnnxRuntime(string file)
    {
        using var temp = new TempFolder();
        var original = OnnxModel.Load(Fixtures.Model(file));
        var written = temp.File(file);
        original.Save(written);
        var reread = OnnxModel.Load(written);

        Assert.Equal(original.Proto, reread.Proto);
        Assert.Equal(RunOnnxRuntime(Fixtures.Model(file)), RunOnnxRuntime(written));
    }

    [Theory]
    [InlineData(10, 5)]
    [InlineData(11, 6)]
    [InlineData(13, 7)]
    [InlineData(15, 8)]
    [InlineData(18, 8)]
    [InlineData(19, 9)]
    [InlineData(20, 9)]
    [InlineData(21, 10)]
    public void Opsets_10_to_21_read_and_run(long opset, long irVersion)
    {
        // LeNet's ops (Conv, Relu, MaxPool with ceil_mode, Flatten, Gemm) mean the same from opset 10 to 21, so
        // the same graph stamped with each opset must read, catalog and run identically. Opset 9 has its own
        // fixture, exported as such by PyTorch.
        using var temp = new TempFolder();
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.Model("lenet5.onnx")));
        proto.OpsetImport[0].Version = opset;
        proto.IrVersion = irVersion;
        File.WriteAllBytes(temp.File("m.onnx"), proto.ToByteArray());

        var model = OnnxModel.Load(temp.File("m.onnx"));

        Assert.Equal(opset, model.Opset);
        Assert.Equal(5, QuantTasks.Weights.WeightCatalog.Find(model).Count);
        Assert.Equal(RunOnnxRuntime(Fixtures.Model("lenet5.onnx")), RunOnnxRuntime(temp.File("m.onnx")));
    }

    [Fact]
    public void Replacing_weights_keeps_everything_else_equal()
    {
        using var temp = new TempFolder();
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var untouched = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var conv1 = model.FindTensor("conv1.weight")!;
        var negated = model.ReadFloats(conv1).Select(v => -v).ToArray();

        TensorValues.Write(conv1, negated);
        model.Save(temp.File("negated.onnx"));
        var reread = OnnxModel.Load(temp.File("negated.onnx"));

        Assert.Equal(negated, reread.ReadFloats(reread.FindTensor("conv1.weight")!));
        // Put the original values back in the reread copy: then nothing at all may differ.
        TensorValues.Write(reread.FindTensor("conv1.weight")!, untouched.ReadFloats(untouched.FindTensor("conv1.weight")!));
        Assert.Equal(untouched.Proto, reread.Proto);
    }

    [Theory]
    [InlineData("lenet5.onnx")]
    [InlineData("lenet5-constants.onnx")]
    public void A_shallow_copy_serializes_as_the_model_and_changes_to_it_leave_the_model_alone(string file)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));
        var before = model.Proto.ToByteArray();
        var copy = OnnxModel.ShallowCopy(model.Proto);
        Assert.Equal(before, copy.ToByteArray());

        // What the layer Hessians and the measured loss do with their copies: extra outputs, a tensor replaced.
        var negated = model.ReadFloats(model.FindTensor("fc2.weight")!).Select(v => -v).ToArray();
        copy.Graph.Output.Add(new ValueInfoProto { Name = copy.Graph.Node[0].Output[0] });
        Assert.True(OnnxModel.ReplaceFloatValues(copy.Graph, "fc2.weight", negated));
        Assert.False(OnnxModel.ReplaceFloatValues(copy.Graph, "no such tensor", negated));
        copy.IrVersion += 1;

        Assert.Equal(before, model.Proto.ToByteArray());
        Assert.Equal(negated, TensorValues.ReadAsFloat(OnnxModel.FindTensor(copy.Graph, "fc2.weight")!));
        Assert.Equal(model.Graph.Output.Count + 1, copy.Graph.Output.Count);
        Assert.Same(model.Graph.Node[^1], copy.Graph.Node[^1]);
    }

    [Fact]
    public void A_shallow_copy_keeps_the_fields_this_schema_does_not_know()
    {
        // A newer exporter's fields, unknown to this build's ONNX schema: one on the model, one on its graph.
        var known = OnnxModel.Load(Fixtures.Model("lenet5.onnx")).Proto;
        var graph = known.Graph.ToByteArray().Concat(UnknownVarint(9001, 7)).ToArray();
        var withoutGraph = known.Clone();
        withoutGraph.Graph = null;
        var model = ModelProto.Parser.ParseFrom([.. withoutGraph.ToByteArray(), .. LengthDelimited(ModelProto.GraphFieldNumber, graph), .. UnknownVarint(9002, 11)]);
        Assert.Equal(known.CalculateSize() + UnknownVarint(9001, 7).Length + UnknownVarint(9002, 11).Length, model.CalculateSize());

        var copy = OnnxModel.ShallowCopy(model);

        Assert.Equal(model.ToByteArray(), copy.ToByteArray());
        Assert.Same(model.Graph.Node[0], copy.Graph.Node[0]);
        Assert.NotSame(model.Graph, copy.Graph);
    }

    private static byte[] UnknownVarint(int field, ulong value) => Encoded(output =>
    {
        output.WriteTag(field, WireFormat.WireType.Varint);
        output.WriteUInt64(value);
    });

    private static byte[] LengthDelimited(int field, byte[] bytes) => Encoded(output =>
    {
        output.WriteTag(field, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(bytes));
    });

    // One field in protobuf's wire format, as the writer puts it.
    private static byte[] Encoded(Action<CodedOutputStream> write)
    {
        using var stream = new MemoryStream();
        using (var output = new CodedOutputStream(stream, leaveOpen: true))
        {
            write(output);
        }

        return stream.ToArray();
    }

    [Fact]
    public void Replaced_weights_change_what_OnnxRuntime_computes_as_expected()
    {
        using var temp = new TempFolder();
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var fc3Bias = model.FindTensor("fc3.bias")!;
        var shifted = model.ReadFloats(fc3Bias).Select(v => v + 1f).ToArray();
        TensorValues.Write(fc3Bias, shifted);
        model.Save(temp.File("shifted.onnx"));

        var before = RunOnnxRuntime(Fixtures.Model("lenet5.onnx"));
        var after = RunOnnxRuntime(temp.File("shifted.onnx"));

        for (var i = 0; i < before.Length; i++)
        {
            Assert.Equal(before[i] + 1f, after[i], 4);
        }
    }

    [Fact]
    public void Half_and_bfloat16_weights_are_written_in_their_own_type()
    {
        var half = new TensorProto { Name = "h", DataType = (int)TensorProto.Types.DataType.Float16, Dims = { 2, 2 } };
        var brain = new TensorProto { Name = "b", DataType = (int)TensorProto.Types.DataType.Bfloat16, Dims = { 2, 2 } };
        float[] values = [1f, -2.5f, 0.333f, 65504f];

        TensorValues.Write(half, values);
        TensorValues.Write(brain, values);

        Assert.Equal(8, half.RawData.Length);
        Assert.Equal(values.Select(v => (float)(Half)v), TensorValues.ReadAsFloat(half));
        Assert.Equal([1f, -2.5f, 0.33203125f, 65536f], TensorValues.ReadAsFloat(brain));
    }

    [Fact]
    public void A_truncated_file_is_QT1201()
    {
        using var temp = new TempFolder();
        var bytes = File.ReadAllBytes(Fixtures.Model("lenet5.onnx"));
        File.WriteAllBytes(temp.File("cut.onnx"), bytes[..(bytes.Length / 2)]);

        var error = Assert.Throws<QuantException>(() => OnnxModel.Load(temp.File("cut.onnx")));

        Assert.Equal(ErrorCode.OnnxUnreadable, error.Code);
        Assert.Equal(temp.File("cut.onnx"), error.Location!.File);
    }

    [Theory]
    [InlineData("version: 1\nmodels: []\n")]
    [InlineData("")]
    [InlineData("\u0089PNG\r\n\u001a\n")]
    public void A_file_that_is_not_ONNX_is_QT1201(string content)
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("not.onnx"), content);

        var error = Assert.Throws<QuantException>(() => OnnxModel.Load(temp.File("not.onnx")));

        Assert.Equal(ErrorCode.OnnxUnreadable, error.Code);
        Assert.Contains("not.onnx", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("../outside.weights")]
    [InlineData("/etc/passwd")]
    [InlineData("sub/../../outside.weights")]
    public void External_data_outside_the_models_folder_is_refused_QT1202(string location)
    {
        using var temp = new TempFolder();
        var folder = Directory.CreateDirectory(temp.File("model")).FullName;
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.Model("lenet5-external.onnx")));
        File.Copy(Fixtures.Model("lenet5-external.weights"), temp.File("outside.weights"));
        foreach (var entry in proto.Graph.Initializer.SelectMany(i => i.ExternalData).Where(e => e.Key == "location"))
        {
            entry.Value = location;
        }

        File.WriteAllBytes(Path.Combine(folder, "m.onnx"), proto.ToByteArray());

        var error = Assert.Throws<QuantException>(() => OnnxModel.Load(Path.Combine(folder, "m.onnx")));

        Assert.Equal(ErrorCode.OnnxExternalDataOutsideFolder, error.Code);
        Assert.Contains(location, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_or_short_external_file_is_QT1203()
    {
        using var temp = new TempFolder();
        temp.Copy(Fixtures.Model("lenet5-external.onnx"));

        var missing = Assert.Throws<QuantException>(() => OnnxModel.Load(temp.File("lenet5-external.onnx")));
        File.WriteAllBytes(temp.File("lenet5-external.weights"), new byte[100]);
        var shortFile = Assert.Throws<QuantException>(() => OnnxModel.Load(temp.File("lenet5-external.onnx")));

        Assert.Equal(ErrorCode.OnnxExternalDataMissing, missing.Code);
        Assert.Equal(ErrorCode.OnnxExternalDataMissing, shortFile.Code);
        Assert.Contains("truncated", shortFile.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_weight_whose_stored_size_disagrees_with_its_shape_is_QT1204(bool typed)
    {
        using var temp = new TempFolder();
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.Model(typed ? "lenet5-typed.onnx" : "lenet5.onnx")));
        var fc2 = proto.Graph.Initializer.Single(i => i.Name == "fc2.weight");
        if (typed)
        {
            fc2.FloatData.RemoveAt(0);
        }
        else
        {
            fc2.RawData = ByteString.CopyFrom(fc2.RawData.Span[..^4]);
        }

        File.WriteAllBytes(temp.File("bad.onnx"), proto.ToByteArray());

        var error = Assert.Throws<QuantException>(() => OnnxModel.Load(temp.File("bad.onnx")));

        Assert.Equal(ErrorCode.OnnxTensorSizeMismatch, error.Code);
        Assert.Contains("fc2.weight", error.Message, StringComparison.Ordinal);
        Assert.Contains("[84, 120]", error.Message, StringComparison.Ordinal);
        Assert.Equal(temp.File("bad.onnx"), error.Location!.File);
    }

    [Fact]
    public void A_missing_model_is_QT1002()
    {
        var error = Assert.Throws<QuantException>(() => OnnxModel.Load("no/such/model.onnx"));

        Assert.Equal(ErrorCode.FileNotFound, error.Code);
    }

    private static float[] Weights(string file, string name)
    {
        var model = OnnxModel.Load(Fixtures.Model(file));
        return model.ReadFloats(model.FindTensor(name)!);
    }

    /// <summary>ONNX Runtime's logits for the first 32 test digits.</summary>
    internal static float[] RunOnnxRuntime(string modelPath)
    {
        var digits = DataFile.Load(Fixtures.Data("digits-test.npz")).Get("input");
        var batch = digits.Floats!.AsSpan(0, 32 * 784).ToArray();
        using var session = new InferenceSession(modelPath);
        using var input = OrtValue.CreateTensorValueFromMemory(batch, [32, 1, 28, 28]);
        using var outputs = session.Run(new RunOptions(), ["input"], [input], session.OutputNames);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }
}
