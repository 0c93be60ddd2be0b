using QuantTasks.Data;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Hessian;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Tests;
using QuantTasks.Weights;
using TorchSharp;
using Xunit.Abstractions;

namespace QuantTasks.Engine.Tests.Hessian;

/// <summary>
/// Hutch++ against Hutchinson on a trained network, where it matters: LeNet-5's Hessian concentrates on a few
/// directions, which the sketch takes exactly and Hutchinson's probes meet as variance. The exact traces of the
/// two convolution blocks come from one Hessian-vector product per weight (e_i . H e_i).
/// </summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class HutchPlusPlusTests(ITestOutputHelper output)
{
    [Fact]
    public void For_the_same_number_of_products_Hutch_plus_plus_is_closer_to_the_exact_traces_of_LeNet()
    {
        LibTorch.EnsureLoaded();
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(Fixtures.Data("digits-calibration.npz")), LossKind.Kl, 32, 32, null, torch.CPU);
        var checkedTensors = new[] { 0, 1 };
        var exact = checkedTensors.Select(t => ExactTrace(oracle, t)).ToArray();

        // 48 products each, a tolerance no estimate meets: Hutchinson's 48 probes against a rank-16 sketch (32
        // products) and 16 probes of the rest.
        const int products = 48;
        const int seeds = 4;
        double plain = 0, deflated = 0;
        for (var seed = 0; seed < seeds; seed++)
        {
            var (hutchinson, _, usedPlain) = HessianEstimators.TraceAndDiagonal(oracle, products, 1e-12, seed, null);
            var (hutchPlusPlus, _, usedDeflated) = HessianEstimators.TraceAndDiagonal(oracle, products, 1e-12, seed, null, sketch: 16);
            Assert.Equal(products, usedPlain);
            Assert.Equal(products, usedDeflated);
            for (var i = 0; i < checkedTensors.Length; i++)
            {
                plain += Math.Pow((hutchinson[checkedTensors[i]] - exact[i]) / exact[i], 2);
                deflated += Math.Pow((hutchPlusPlus[checkedTensors[i]] - exact[i]) / exact[i], 2);
            }
        }

        var count = seeds * checkedTensors.Length;
        output.WriteLine($"exact traces {string.Join(", ", exact.Select(e => e.ToString("G5", System.Globalization.CultureInfo.InvariantCulture)))}; "
            + $"root mean squared relative error at {products} products: Hutchinson {Math.Sqrt(plain / count):P2}, Hutch++ {Math.Sqrt(deflated / count):P2}");
        Assert.True(deflated < plain / 4, $"Hutch++ {Math.Sqrt(deflated / count):P2} against Hutchinson {Math.Sqrt(plain / count):P2}");
    }

    // tr(H_tt) as the sum of e_i . H_tt e_i over the block's weights.
    private static double ExactTrace(HessianOracle oracle, int t)
    {
        var parameter = oracle.Parameters[t];
        var n = (int)parameter.numel();
        double trace = 0;
        oracle.ForEachBatch(batch =>
        {
            for (var i = 0; i < n; i++)
            {
                using var unit = torch.zeros(n);
                unit[i] = 1;
                using var product = batch.BlockProduct(t, unit.reshape(parameter.shape));
                trace += batch.Weight * product.flatten()[i].item<float>();
            }
        });
        return trace;
    }
}
