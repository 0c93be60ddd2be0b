using Google.Protobuf;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Onnx.Proto;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Evaluation;

/// <summary>The label-free figures against counts done by hand and by brute force.</summary>
public sealed class FidelityMetricTests
{
    [Fact]
    public void Agreement_per_time_step_counts_each_position_of_a_sequence()
    {
        // Two samples of 3 time steps x 4 classes; the second model differs at sample 0 step 2 and sample 1 step 0.
        float[] a =
        [
            9, 0, 0, 0, /**/ 0, 9, 0, 0, /**/ 0, 0, 9, 0,
            0, 0, 0, 9, /**/ 9, 0, 0, 0, /**/ 0, 9, 0, 0,
        ];
        var b = (float[])a.Clone();
        b[(0 * 12) + (2 * 4) + 3] = 10; // sample 0, step 2: class 3 now wins
        b[(1 * 12) + (0 * 4) + 0] = 10; // sample 1, step 0: class 0 now wins over 3
        var reference = new ModelOutputs(a, 2, 12, [3, 4]);
        var other = new ModelOutputs(b, 2, 12, [3, 4]);

        Assert.Equal(100.0 * 4 / 6, ModelEvaluator.Agreement(reference, other, classAxis: 1), 12);
        Assert.Equal(0.0, ModelEvaluator.Agreement(reference, other), 12); // the old flattened argmax: one position per sample, both moved
    }

    [Fact]
    public void Agreement_along_a_leading_class_axis_matches_brute_force_per_pixel()
    {
        // Segmentation-like: 2 samples x 3 classes x 2 x 5 pixels, random scores.
        var random = new Random(5);
        long[] shape = [3, 2, 5];
        var size = 30;
        var a = Enumerable.Range(0, 2 * size).Select(_ => (float)random.NextDouble()).ToArray();
        var b = a.Select(v => v + (float)(0.3 * (random.NextDouble() - 0.5))).ToArray();

        var expected = 0;
        for (var s = 0; s < 2; s++)
        {
            for (var pixel = 0; pixel < 10; pixel++)
            {
                int Best(float[] x) => Enumerable.Range(0, 3).OrderByDescending(c => x[(s * size) + (c * 10) + pixel]).ThenBy(c => c).First();
                expected += Best(a) == Best(b) ? 1 : 0;
            }
        }

        var measured = ModelEvaluator.Agreement(new ModelOutputs(a, 2, size, shape), new ModelOutputs(b, 2, size, shape), classAxis: 0);
        Assert.Equal(100.0 * expected / 20, measured, 12);
    }

    [Fact]
    public void An_output_whose_size_per_sample_changes_between_batches_is_a_coded_error()
    {
        // NonZero's output holds as many columns as the batch has positive values: 300 samples run as batches of
        // 256 and 44 with different counts per sample, which no per-sample comparison can line up.
        var graph = new GraphProto { Name = "nonzero" };
        var type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto() } };
        type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
        type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 4 });
        graph.Input.Add(new ValueInfoProto { Name = "input", Type = type });
        graph.Output.Add(new ValueInfoProto { Name = "output", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        graph.Initializer.Add(new TensorProto { Name = "zero", DataType = 1, FloatData = { 0f } });
        graph.Node.Add(new NodeProto { OpType = "Greater", Input = { "input", "zero" }, Output = { "positive" } });
        graph.Node.Add(new NodeProto { OpType = "NonZero", Input = { "positive" }, Output = { "where" } });
        var cast = new NodeProto { OpType = "Cast", Input = { "where" }, Output = { "output" } };
        cast.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        graph.Node.Add(cast);
        var model = new ModelProto { IrVersion = 8, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        using var folder = new TempFolder();
        var values = Enumerable.Range(0, 300 * 4).Select(i => i < 256 * 4 ? 1f : (i % 3 == 0 ? 1f : -1f)).ToArray();
        NpzWriter.Write(folder.File("x.npz"), ("input", NpzWriter.Floats([300, 4], values)));

        var error = Assert.Throws<QuantException>(() => ModelEvaluator.Run(model.ToByteArray(), DataFile.Load(folder.File("x.npz")), null, "nonzero.onnx"));

        Assert.Equal(ErrorCode.DataWrongType, error.Code);
        Assert.Contains("'output' of 'nonzero.onnx'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Binary_agreement_compares_decisions_at_one_half()
    {
        var reference = new ModelOutputs([0.1f, 0.6f, 0.49f, 0.9f], 1, 4, [1, 2, 2]);
        var other = new ModelOutputs([0.2f, 0.4f, 0.51f, 0.95f], 1, 4, [1, 2, 2]);

        Assert.Equal(50.0, ModelEvaluator.BinaryAgreement(reference, other), 12);
    }
}
