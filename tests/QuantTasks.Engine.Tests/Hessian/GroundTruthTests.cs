using QuantTasks.Diagnostics;
using Google.Protobuf;
using QuantTasks.Data;
using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Hessian;
using QuantTasks.Engine.Native;
using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using QuantTasks.Policy;
using QuantTasks.Tests;
using QuantTasks.Weights;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Hessian;

/// <summary>
/// The estimators against Hessians known exactly: linear least squares (H = 2 X^T X / n per output), softmax
/// regression (closed form), and a small MLP whose Hessian blocks come from finite differences of gradients.
/// Trace within 5% at the default tolerance, top eigenvalue within 2%, and the same seed gives the same result.
/// </summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class GroundTruthTests : IDisposable
{
    private const int Samples = 120;
    private const int Features = 6;
    private const int Classes = 3;
    private readonly TempFolder _folder = new();
    private readonly Random _random = new(17);
    private readonly float[] _x;
    private readonly long[] _labels;

    public GroundTruthTests()
    {
        LibTorch.EnsureLoaded();
        _x = Enumerable.Range(0, Samples * Features).Select(_ => (float)((_random.NextDouble() * 2) - 1) * (1 + (_random.Next(3) * 0.5f))).ToArray();
        _labels = Enumerable.Range(0, Samples).Select(_ => (long)_random.Next(Classes)).ToArray();
        NpzWriter.Write(_folder.File("data.npz"),
            ("input", NpzWriter.Floats([Samples, Features], _x)),
            ("label", NpzWriter.Longs(_labels)));
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Linear_least_squares()
    {
        // y = x W, loss = mean over samples and outputs of (y - y0)^2: H = (2 / (n k)) X^T X for each output column.
        var w = Weights(Features * Classes);
        var model = Model("lsq", w);
        var xtx = new double[Features, Features];
        for (var i = 0; i < Samples; i++)
        {
            for (var a = 0; a < Features; a++)
            {
                for (var b = 0; b < Features; b++)
                {
                    xtx[a, b] += (double)_x[(i * Features) + a] * _x[(i * Features) + b];
                }
            }
        }

        var scale = 2.0 / (Samples * Classes);
        var exactTrace = Enumerable.Range(0, Features).Sum(a => xtx[a, a]) * scale * Classes;
        var exactTop = TopEigenvalue(xtx) * scale;

        var (trace, top) = Estimate(model, LossKind.Mse);

        Assert.InRange(trace, exactTrace * 0.95, exactTrace * 1.05);
        Assert.InRange(top, exactTop * 0.98, exactTop * 1.02);
    }

    [Fact]
    public void Softmax_regression()
    {
        // logits = x W, cross-entropy: H[(a,j),(b,l)] = (1/n) sum_i x_a x_b (p_j delta_jl - p_j p_l).
        var w = Weights(Features * Classes);
        var model = Model("softmax", w);
        var size = Features * Classes;
        var hessian = new double[size, size];
        for (var i = 0; i < Samples; i++)
        {
            var logits = new double[Classes];
            for (var j = 0; j < Classes; j++)
            {
                for (var a = 0; a < Features; a++)
                {
                    logits[j] += _x[(i * Features) + a] * w[(a * Classes) + j];
                }
            }

            var max = logits.Max();
            var p = logits.Select(l => Math.Exp(l - max)).ToArray();
            var total = p.Sum();
            p = p.Select(v => v / total).ToArray();
            for (var a = 0; a < Features; a++)
            {
                for (var b = 0; b < Features; b++)
                {
                    for (var j = 0; j < Classes; j++)
                    {
                        for (var l = 0; l < Classes; l++)
                        {
                            var curvature = ((j == l ? p[j] : 0) - (p[j] * p[l])) / Samples;
                            hessian[(a * Classes) + j, (b * Classes) + l] += _x[(i * Features) + a] * _x[(i * Features) + b] * curvature;
                        }
                    }
                }
            }
        }

        var exactTrace = Enumerable.Range(0, size).Sum(i => hessian[i, i]);
        var exactTop = TopEigenvalue(hessian);

        var (trace, top) = Estimate(model, LossKind.CrossEntropy);

        Assert.InRange(trace, exactTrace * 0.95, exactTrace * 1.05);
        Assert.InRange(top, exactTop * 0.98, exactTop * 1.02);
    }

    [Fact]
    public void Without_labels_softmax_regression_is_compared_under_KL_whose_Hessian_is_the_Fisher_information()
    {
        // logits = x W; KL from the float model's own softmax: at the float weights its Hessian is
        // (1/n) sum_i x x^T (diag(p) - p p^T), the cross-entropy Hessian of the same logits.
        var w = Weights(Features * Classes);
        var model = Model("logits", w);
        double exactTrace = 0;
        for (var i = 0; i < Samples; i++)
        {
            var logits = Enumerable.Range(0, Classes).Select(j => Enumerable.Range(0, Features).Sum(a => (double)_x[(i * Features) + a] * w[(a * Classes) + j])).ToArray();
            var e = logits.Select(l => Math.Exp(l - logits.Max())).ToArray();
            var p = e.Select(v => v / e.Sum()).ToArray();
            var norm = Enumerable.Range(0, Features).Sum(a => (double)_x[(i * Features) + a] * _x[(i * Features) + a]);
            exactTrace += norm * p.Sum(v => v * (1 - v)) / Samples;
        }

        AssertLabelFreeTrace(model, exactTrace);
    }

    [Fact]
    public void Without_labels_a_sigmoid_map_is_compared_by_binary_KL_whose_Hessian_has_the_closed_form()
    {
        // map = sigmoid(x W), each element a probability; per-element binary KL averaged over the n x k map:
        // H for column j = (1 / (n k)) sum_i p_ij (1 - p_ij) x_i x_i^T, so tr H = (1 / (n k)) sum_ij p_ij (1 - p_ij) |x_i|^2.
        var w = Weights(Features * Classes);
        var model = Activated("map", "Sigmoid", w);
        double exactTrace = 0;
        for (var i = 0; i < Samples; i++)
        {
            var norm = Enumerable.Range(0, Features).Sum(a => (double)_x[(i * Features) + a] * _x[(i * Features) + a]);
            for (var j = 0; j < Classes; j++)
            {
                var z = Enumerable.Range(0, Features).Sum(a => (double)_x[(i * Features) + a] * w[(a * Classes) + j]);
                var p = 1 / (1 + Math.Exp(-z));
                exactTrace += p * (1 - p) * norm / (Samples * Classes);
            }
        }

        AssertLabelFreeTrace(model, exactTrace);
    }

    [Fact]
    public void A_map_that_is_zero_on_every_sample_stops_the_analysis_with_QT1603()
    {
        // A detector on images without text: sigmoid(x W - 200) is 0 everywhere, and nothing reacts to W.
        var model = Save("dead", new GraphProto
        {
            Name = "dead",
            Initializer = { Tensor("w", [Features, Classes], Weights(Features * Classes)), Tensor("shift", [1], [-200f]) },
            Input = { Value("input", Features) },
            Output = { Value("map", Classes) },
            Node =
            {
                new NodeProto { OpType = "MatMul", Input = { "input", "w" }, Output = { "logits" } },
                new NodeProto { OpType = "Add", Input = { "logits", "shift" }, Output = { "shifted" } },
                new NodeProto { OpType = "Sigmoid", Input = { "shifted" }, Output = { "map" } },
            },
        });

        var error = Assert.Throws<QuantException>(() => SensitivityAnalysis.Run(model, WeightCatalog.Find(model), Unlabelled(),
            new AnalysisOptions(AnalysisMethod.Trace, LossKind.Auto, Samples, 32, 50, 0.01)));

        Assert.Equal(ErrorCode.SensitivityDegenerate, error.Code);
        Assert.Contains("sensitivity.loss", error.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCode.BadInput, error.ExitCode);
    }

    [Fact]
    public void A_gradient_that_is_NaN_every_time_stops_the_analysis_with_QT1604_naming_the_tensor()
    {
        // sqrt(0 x W): finite outputs (0), but the chain rule divides by 2 sqrt(0) and multiplies by 0, so the
        // gradient is NaN on every pass; the repeats that cure libtorch's transient NaN cannot help.
        var model = Save("nan-gradient", new GraphProto
        {
            Name = "nan-gradient",
            Initializer = { Tensor("w", [Features, Classes], Weights(Features * Classes)), Tensor("zero", [1], [0f]) },
            Input = { Value("input", Features) },
            Output = { Value("root", Classes) },
            Node =
            {
                new NodeProto { OpType = "MatMul", Input = { "input", "w" }, Output = { "z" } },
                new NodeProto { OpType = "Mul", Input = { "z", "zero" }, Output = { "flat" } },
                new NodeProto { OpType = "Sqrt", Input = { "flat" }, Output = { "root" } },
            },
        });

        var error = Assert.Throws<QuantException>(() => SensitivityAnalysis.Run(model, WeightCatalog.Find(model), Unlabelled(),
            new AnalysisOptions(AnalysisMethod.Trace, LossKind.Mse, Samples, 32, 4, 0.01)));

        Assert.Equal(ErrorCode.HessianNotFinite, error.Code);
        Assert.Contains("'w'", error.Message, StringComparison.Ordinal);
        Assert.Contains("OMP_NUM_THREADS=1", error.Message, StringComparison.Ordinal);
    }

    // Without labels, loss auto must pick the divergence, and the estimated trace must be the exact one.
    private void AssertLabelFreeTrace(OnnxModel model, double exactTrace)
    {
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, Unlabelled(), LossKind.Auto, Samples, 32, null, torch.CPU);
        var (traces, _, _) = HessianEstimators.TraceAndDiagonal(oracle, 400, 0.005, 0, null);

        Assert.Equal(LossKind.Kl, oracle.Loss);
        Assert.InRange(traces[0], exactTrace * 0.95, exactTrace * 1.05);
    }

    // output = op(x W), an activation per element.
    private OnnxModel Activated(string name, string op, float[] w)
    {
        var activation = new NodeProto { OpType = op, Input = { "logits" }, Output = { name } };
        return Save(name, new GraphProto
        {
            Name = name,
            Initializer = { Tensor("w", [Features, Classes], w) },
            Input = { Value("input", Features) },
            Output = { Value(name, Classes) },
            Node = { new NodeProto { OpType = "MatMul", Input = { "input", "w" }, Output = { "logits" } }, activation },
        });
    }

    private DataFile Unlabelled()
    {
        var path = _folder.File("unlabelled.npz");
        if (!File.Exists(path))
        {
            NpzWriter.Write(path, ("input", NpzWriter.Floats([Samples, Features], _x)));
        }

        return DataFile.Load(path);
    }

    [Fact]
    public void Small_MLP_against_finite_differences_of_gradients()
    {
        var model = MlpModel();
        var exact = FiniteDifferenceHessians(model);

        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(_folder.File("data.npz")), LossKind.CrossEntropy, Samples, 40, null, torch.CPU);
        // A tiny network couples its two layers strongly relative to their traces, so one probe over both
        // tensors is noisy for each: the default tolerance needs more than the default 200 probes here.
        var (traces, _, probes) = HessianEstimators.TraceAndDiagonal(oracle, 2000, 0.01, 0, null);
        var (tops, _) = HessianEstimators.TopEigenvalues(oracle, 200, 0.01, 0, null);
        Console.WriteLine($"traces {string.Join(",", traces)} after {probes} probes, exact {string.Join(",", exact.Select(h => Enumerable.Range(0, h.GetLength(0)).Sum(i => h[i, i])))} tops {string.Join(",", tops)}");

        for (var t = 0; t < exact.Length; t++)
        {
            var exactTrace = Enumerable.Range(0, exact[t].GetLength(0)).Sum(i => exact[t][i, i]);
            Assert.InRange(traces[t], exactTrace - (0.05 * Math.Abs(exactTrace)), exactTrace + (0.05 * Math.Abs(exactTrace)));
            var exactTop = TopEigenvalue(exact[t]);
            Assert.InRange(tops[t], exactTop - (0.02 * Math.Abs(exactTop)), exactTop + (0.02 * Math.Abs(exactTop)));
        }
    }

    [Fact]
    public void A_sketch_as_wide_as_the_weights_makes_the_traces_and_diagonals_exact()
    {
        var model = MlpModel();
        var exact = FiniteDifferenceHessians(model);
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(_folder.File("data.npz")), LossKind.CrossEntropy, Samples, 40, null, torch.CPU);
        var weights = graph.Parameters.Sum(p => (int)p.numel());

        // Q spans every direction, so the probed rest is zero up to rounding whatever the probes.
        var (traces, diagonals, _) = HessianEstimators.TraceAndDiagonal(oracle, 3 * weights + 2, 0.01, 4, null, sketch: weights);

        for (var t = 0; t < exact.Length; t++)
        {
            var n = exact[t].GetLength(0);
            var exactTrace = Enumerable.Range(0, n).Sum(i => exact[t][i, i]);
            Assert.InRange(traces[t], exactTrace - (1e-3 * Math.Abs(exactTrace)), exactTrace + (1e-3 * Math.Abs(exactTrace)));
            for (var i = 0; i < n; i++)
            {
                Assert.InRange(diagonals[t][i], exact[t][i, i] - (1e-3 * Math.Abs(exactTrace)), exact[t][i, i] + (1e-3 * Math.Abs(exactTrace)));
            }
        }
    }

    [Fact]
    public void The_diagonal_estimate_matches_the_exact_diagonal()
    {
        var w = Weights(Features * Classes);
        var model = Model("lsq", w);
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(_folder.File("data.npz")), LossKind.Mse, Samples, 32, null, torch.CPU);

        var (_, diagonals, _) = HessianEstimators.TraceAndDiagonal(oracle, 400, 1e-9, 3, null);

        // H[(a,j),(a,j)] = (2 / (n k)) sum_i x_ia^2: the same for every output column j.
        for (var a = 0; a < Features; a++)
        {
            var exact = 2.0 / (Samples * Classes) * Enumerable.Range(0, Samples).Sum(i => (double)_x[(i * Features) + a] * _x[(i * Features) + a]);
            for (var j = 0; j < Classes; j++)
            {
                Assert.InRange(diagonals[0][(a * Classes) + j], exact * 0.85, exact * 1.15);
            }
        }
    }

    [Fact]
    public void The_same_seed_gives_the_same_result_and_another_seed_another()
    {
        var model = Model("softmax", Weights(Features * Classes));

        var first = Estimate(model, LossKind.CrossEntropy, seed: 5);
        var second = Estimate(model, LossKind.CrossEntropy, seed: 5);
        var other = Estimate(model, LossKind.CrossEntropy, seed: 6);

        Assert.Equal(first, second);
        Assert.NotEqual(first.Trace, other.Trace);
    }

    private (double Trace, double Top) Estimate(OnnxModel model, LossKind loss, long seed = 0)
    {
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(_folder.File("data.npz")), loss, Samples, 32, null, torch.CPU);
        var (traces, _, _) = HessianEstimators.TraceAndDiagonal(oracle, 200, 0.01, seed, null);
        var (tops, _) = HessianEstimators.TopEigenvalues(oracle, 200, 0.01, seed, null);
        return (traces[0], tops[0]);
    }

    private float[] Weights(int count) => Enumerable.Range(0, count).Select(_ => (float)(_random.NextDouble() - 0.5)).ToArray();

    private OnnxModel Model(string name, float[] w)
    {
        var graph = new GraphProto
        {
            Name = name,
            Initializer = { Tensor("w", [Features, Classes], w) },
            Input = { Value("input", Features) },
            Output = { Value("logits", Classes) },
            Node = { new NodeProto { OpType = "MatMul", Input = { "input", "w" }, Output = { "logits" } } },
        };
        return Save(name, graph);
    }

    private OnnxModel MlpModel()
    {
        const int hidden = 4;
        var graph = new GraphProto
        {
            Name = "mlp",
            Initializer = { Tensor("w1", [Features, hidden], Weights(Features * hidden)), Tensor("w2", [hidden, Classes], Weights(hidden * Classes)) },
            Input = { Value("input", Features) },
            Output = { Value("logits", Classes) },
            Node =
            {
                new NodeProto { OpType = "MatMul", Input = { "input", "w1" }, Output = { "h" } },
                new NodeProto { OpType = "Tanh", Input = { "h" }, Output = { "a" } },
                new NodeProto { OpType = "MatMul", Input = { "a", "w2" }, Output = { "logits" } },
            },
        };
        return Save("mlp", graph);
    }

    // H for each weight tensor by central differences of the mean-loss gradient, symmetrized.
    private double[][,] FiniteDifferenceHessians(OnnxModel model)
    {
        using var graph = TorchGraph.Compile(model, WeightCatalog.Find(model), torch.CPU);
        var oracle = new HessianOracle(graph, DataFile.Load(_folder.File("data.npz")), LossKind.CrossEntropy, Samples, Samples, null, torch.CPU);
        var result = new double[graph.Parameters.Count][,];
        const float epsilon = 1e-2f;
        for (var t = 0; t < graph.Parameters.Count; t++)
        {
            var parameter = graph.Parameters[t];
            var n = (int)parameter.numel();
            var hessian = new double[n, n];
            for (var j = 0; j < n; j++)
            {
                var plus = GradientWith(oracle, parameter, t, j, epsilon);
                var minus = GradientWith(oracle, parameter, t, j, -epsilon);
                for (var i = 0; i < n; i++)
                {
                    hessian[i, j] = (plus[i] - minus[i]) / (2 * epsilon);
                }
            }

            for (var i = 0; i < n; i++)
            {
                for (var j = 0; j < i; j++)
                {
                    hessian[i, j] = hessian[j, i] = (hessian[i, j] + hessian[j, i]) / 2;
                }
            }

            result[t] = hessian;
        }

        return result;
    }

    private static double[] GradientWith(HessianOracle oracle, torch.Tensor parameter, int tensor, int element, float delta)
    {
        using (torch.no_grad())
        {
            parameter.view(-1)[element] += delta;
        }

        double[] gradient = [];
        oracle.ForEachBatch(batch => gradient = batch.Gradient(tensor).flatten().to(torch.ScalarType.Float64).data<double>().ToArray());
        using (torch.no_grad())
        {
            parameter.view(-1)[element] -= delta;
        }

        return gradient;
    }

    private OnnxModel Save(string name, GraphProto graph)
    {
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 17 } } };
        var path = _folder.File(name + ".onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        return OnnxModel.Load(path);
    }

    private static TensorProto Tensor(string name, long[] dims, float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return new TensorProto { Name = name, DataType = 1, Dims = { dims }, RawData = ByteString.CopyFrom(bytes) };
    }

    private static ValueInfoProto Value(string name, long width) => new()
    {
        Name = name,
        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "n" }, new TensorShapeProto.Types.Dimension { DimValue = width } } } } },
    };

    // The dominant eigenvalue (largest in magnitude, with its sign) of a symmetric matrix, by Jacobi rotations.
    private static double TopEigenvalue(double[,] matrix) => Eigenvalues(matrix).MaxBy(Math.Abs);

    /// <summary>All eigenvalues of a small symmetric matrix (cyclic Jacobi).</summary>
    internal static double[] Eigenvalues(double[,] matrix)
    {
        var n = matrix.GetLength(0);
        var a = (double[,])matrix.Clone();
        for (var sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (var p = 0; p < n; p++)
            {
                for (var q = p + 1; q < n; q++)
                {
                    off += a[p, q] * a[p, q];
                }
            }

            if (off < 1e-24)
            {
                break;
            }

            for (var p = 0; p < n; p++)
            {
                for (var q = p + 1; q < n; q++)
                {
                    if (Math.Abs(a[p, q]) < 1e-300)
                    {
                        continue;
                    }

                    var theta = (a[q, q] - a[p, p]) / (2 * a[p, q]);
                    var t = Math.Sign(theta) / (Math.Abs(theta) + Math.Sqrt((theta * theta) + 1));
                    if (theta == 0)
                    {
                        t = 1;
                    }

                    var c = 1 / Math.Sqrt((t * t) + 1);
                    var s = t * c;
                    for (var k = 0; k < n; k++)
                    {
                        var akp = a[k, p];
                        var akq = a[k, q];
                        a[k, p] = (c * akp) - (s * akq);
                        a[k, q] = (s * akp) + (c * akq);
                    }

                    for (var k = 0; k < n; k++)
                    {
                        var apk = a[p, k];
                        var aqk = a[q, k];
                        a[p, k] = (c * apk) - (s * aqk);
                        a[q, k] = (s * apk) + (c * aqk);
                    }
                }
            }
        }

        return Enumerable.Range(0, n).Select(i => a[i, i]).ToArray();
    }

    private static double PowerIterationUnused(double[,] matrix)
    {
        var n = matrix.GetLength(0);
        var v = Enumerable.Range(0, n).Select(i => 1.0 + (0.01 * i)).ToArray();
        double lambda = 0;
        for (var iteration = 0; iteration < 20000; iteration++)
        {
            var next = new double[n];
            for (var i = 0; i < n; i++)
            {
                for (var j = 0; j < n; j++)
                {
                    next[i] += matrix[i, j] * v[j];
                }
            }

            var norm = Math.Sqrt(next.Sum(x => x * x));
            lambda = v.Zip(next, (a, b) => a * b).Sum() / v.Sum(x => x * x);
            v = next.Select(x => x / norm).ToArray();
        }

        return lambda;
    }
}
