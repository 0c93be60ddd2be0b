using QuantTasks.Blob;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Core.Tests.Blob;

/// <summary>The size model the search relies on, against the bytes the blob writer really writes.</summary>
public sealed class PayloadSizeTests
{
    [Fact]
    public void The_size_model_matches_the_blob_byte_for_byte_for_every_method_width_and_sparsity()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var weights = WeightCatalog.Find(model);
        var methods = new[] { QuantizationMethods.Uniform, QuantizationMethods.Kmeans, QuantizationMethods.Ecsq };
        var cases = 0;
        foreach (var sparsity in new[] { 0.0, 0.5, 0.9 })
        {
            foreach (var entropy in new[] { true, false })
            {
                foreach (var method in methods)
                {
                    foreach (var bits in new[] { 1, 2, 3, 4, 5, 6, 8 })
                    {
                        var stored = new List<StoredTensor>();
                        var predicted = new Dictionary<string, long>();
                        foreach (var (w, t) in weights.Select((w, t) => (w, t)))
                        {
                            var values = model.ReadFloats(model.FindTensor(w.Name)!);
                            if (t == 0)
                            {
                                stored.Add(StoredTensor.KeptInFloat(w.Name, w.Shape, w.DataType, values));
                                predicted[w.Name] = PayloadSize.KeptInFloat(values.Length);
                                continue;
                            }

                            var mask = sparsity > 0 ? MagnitudePruning.PerTensor(values, sparsity) : null;
                            var axis = t % 2 == 0 ? w.OutputChannelAxis : -1;
                            var q = TensorQuantizer.Quantize(PreparedTensor.Create(w.Name, values, w.Shape, axis, pruned: mask), method, bits, new QuantizerSettings());
                            stored.Add(StoredTensor.Of(q, w.DataType));
                            predicted[w.Name] = PayloadSize.Of(q, entropy);
                        }

                        var blob = BlobWriter.Write(model, stored, new byte[32], new Dictionary<string, string>(), entropy);
                        foreach (var (name, bytes) in predicted)
                        {
                            Assert.Equal(bytes, blob.TensorBytes[name]);
                            cases++;
                        }

                        Assert.Equal(predicted.Values.Sum(), blob.PayloadBytes);
                    }
                }
            }
        }

        Assert.Equal(3 * 2 * 3 * 7 * 5, cases);
    }
}
