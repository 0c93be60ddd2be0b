using QuantTasks.Compensation;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Search;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Core.Tests.Search;

/// <summary>The search on LeNet-5's weights: budget, keep_float, overrides, pruning, sensitivities, determinism.</summary>
public sealed class MixedPrecisionSearchTests
{
    private readonly IReadOnlyList<WeightTensor> _weights;
    private readonly float[][] _values;

    public MixedPrecisionSearchTests()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        _weights = WeightCatalog.Find(model);
        _values = _weights.Select(w => model.ReadFloats(model.FindTensor(w.Name)!)).ToArray();
    }

    [Theory]
    [InlineData(QuantizationMethods.Uniform, nameof(SearchAlgorithm.Dp), 8.0)]
    [InlineData(QuantizationMethods.Kmeans, nameof(SearchAlgorithm.Dp), 12.0)]
    [InlineData(QuantizationMethods.Ecsq, nameof(SearchAlgorithm.Greedy), 10.0)]
    public void The_budget_holds_and_the_sizes_are_those_the_blob_will_hold(string method, string searchName, double ratio)
    {
        var search = Enum.Parse<SearchAlgorithm>(searchName);
        var options = new QuantizationOptions
        {
            Omega = OmegaKind.Sensitivity, // the plain search: sensitivity (1 here) x squared error
            Method = method,
            Search = search,
            Budget = new BudgetOptions { CompressionRatio = ratio },
            KeepFloat = [],
        };
        var result = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, null));

        Assert.Equal(245_880, result.OriginalBytes);
        Assert.Equal((long)(245_880 / ratio), result.Budget);
        Assert.True(result.PayloadBytes <= result.Budget, $"{result.PayloadBytes} > {result.Budget}");
        Assert.All(result.Tensors, t => Assert.Equal(QuantTasks.Blob.PayloadSize.Of(t.Stored.Quantized!, true), t.Bytes));
    }

    [Fact]
    public void Sensitive_tensors_get_more_bits()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.Sensitivity, Method = QuantizationMethods.Kmeans, Budget = new BudgetOptions { AverageBits = 3 }, Granularity = Granularity.PerTensor };
        Dictionary<string, TensorSensitivityInput> Sensitivities(string favourite) =>
            _weights.ToDictionary(w => w.Name, w => new TensorSensitivityInput(w.Name == favourite ? 1000 : 1, null));

        var fc1 = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, Sensitivities("fc1.weight")));
        var fc2 = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, Sensitivities("fc2.weight")));

        Assert.True(fc1.Tensors.Single(t => t.Weight.Name == "fc1.weight").Bits > fc2.Tensors.Single(t => t.Weight.Name == "fc1.weight").Bits);
        Assert.True(fc2.Tensors.Single(t => t.Weight.Name == "fc2.weight").Bits > fc1.Tensors.Single(t => t.Weight.Name == "fc2.weight").Bits);
    }

    [Fact]
    public void With_the_hessian_diagonal_as_omega_the_tensor_whose_diagonal_is_larger_gets_more_bits()
    {
        // Equal sensitivities, so HAWQ's Omega cannot tell fc1 and fc2 apart; their diagonals can.
        var options = new QuantizationOptions
        {
            Method = QuantizationMethods.Kmeans,
            Budget = new BudgetOptions { AverageBits = 3 },
            Granularity = Granularity.PerTensor,
            Omega = OmegaKind.HessianDiagonal,
        };
        Dictionary<string, TensorSensitivityInput> Diagonals(string favourite) =>
            _weights.ToDictionary(w => w.Name, w => new TensorSensitivityInput(1, Enumerable.Repeat(w.Name == favourite ? 1000f : 1f, (int)w.Params).ToArray()));

        var fc1 = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, Diagonals("fc1.weight")));
        var fc2 = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, Diagonals("fc2.weight")));

        Assert.True(fc1.Tensors.Single(t => t.Weight.Name == "fc1.weight").Bits > fc2.Tensors.Single(t => t.Weight.Name == "fc1.weight").Bits);
        Assert.True(fc2.Tensors.Single(t => t.Weight.Name == "fc2.weight").Bits > fc1.Tensors.Single(t => t.Weight.Name == "fc2.weight").Bits);
        Assert.All(fc1.Tensors, t => Assert.True(t.Omega >= 0));
    }

    [Fact]
    public void The_hessian_diagonal_as_omega_without_a_diagonal_is_QT1602()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.HessianDiagonal };
        var sensitivities = _weights.ToDictionary(w => w.Name, _ => new TensorSensitivityInput(1, null));

        var error = Assert.Throws<QuantException>(() => MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, sensitivities)));

        Assert.Equal(ErrorCode.QuantizerNeedsHessian, error.Code);
        Assert.Contains("omega", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void With_sparsity_candidates_each_tensor_gets_one_of_them_and_the_optimum_is_no_worse_than_any_fixed_sparsity()
    {
        var options = new QuantizationOptions
        {
            Omega = OmegaKind.Sensitivity, // the plain search: sensitivity (1 here) x squared error
            Method = QuantizationMethods.Kmeans,
            Granularity = Granularity.PerTensor,
            Bits = [2, 3, 4],
            Budget = new BudgetOptions { CompressionRatio = 14 },
            KeepFloat = [],
        };
        var sensitivities = _weights.ToDictionary(w => w.Name, w => new TensorSensitivityInput(1.0 / w.Params, null));
        double Omega(PruningOptions pruning) =>
            MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, pruning, true, sensitivities)).Tensors.Sum(t => t.Omega);

        var searched = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions { Candidates = [0.6, 0, 0.3] }, true, sensitivities));

        Assert.True(searched.PayloadBytes <= searched.Budget);
        Assert.All(searched.Tensors, t => Assert.Contains(new[] { 0, 0.3, 0.6 }, c => Math.Abs(c - t.Sparsity) < 0.01));
        var omega = searched.Tensors.Sum(t => t.Omega);
        Assert.True(omega <= Omega(new PruningOptions { Sparsity = 0.3 }) + 1e-12);
        Assert.True(omega <= Omega(new PruningOptions { Sparsity = 0.6 }) + 1e-12);
        Assert.All(searched.Tensors, t => Assert.Equal(QuantTasks.Blob.PayloadSize.Of(t.Stored.Quantized!, true), t.Bytes));
    }

    [Fact]
    public void Keep_float_overrides_and_pruning_are_respected()
    {
        var options = new QuantizationOptions
        {
            Omega = OmegaKind.Sensitivity, // the plain search: sensitivity (1 here) x squared error
            Budget = new BudgetOptions { CompressionRatio = 4 },
            KeepFloat = ["conv1.*"],
            Overrides = [new OverrideOptions { Match = "fc3.*", Bits = 8, Method = QuantizationMethods.Kmeans }],
        };
        var result = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions { Sparsity = 0.5 }, true, null));

        var conv1 = result.Tensors.Single(t => t.Weight.Name == "conv1.weight");
        Assert.Null(conv1.Bits);
        Assert.Equal(0, conv1.Sparsity);
        Assert.Equal(150 * 4, conv1.Bytes);
        var fc3 = result.Tensors.Single(t => t.Weight.Name == "fc3.weight");
        Assert.Equal(8, fc3.Bits);
        Assert.Equal(QuantizationMethods.Kmeans, fc3.Method);
        Assert.All(result.Tensors.Where(t => t.Bits is not null), t => Assert.Equal(0.5, t.Sparsity, 3));
    }

    [Fact]
    public void Global_pruning_takes_more_from_tensors_of_small_weights()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.Sensitivity, Budget = new BudgetOptions { CompressionRatio = 4 }, KeepFloat = [] };
        var result = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions { Sparsity = 0.5, Scope = PruningScope.Global }, true, null));
        var total = result.Tensors.Sum(t => t.Sparsity * t.Weight.Params) / result.Tensors.Sum(t => t.Weight.Params);
        Assert.Equal(0.5, total, 3);
        Assert.True(result.Tensors.Max(t => t.Sparsity) - result.Tensors.Min(t => t.Sparsity) > 0.2);
    }

    [Fact]
    public void Hessian_kmeans_without_a_diagonal_is_QT1602_naming_the_tensor()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.Sensitivity, Method = QuantizationMethods.HessianKmeans };
        var error = Assert.Throws<QuantException>(() => MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, null)));
        Assert.Equal(ErrorCode.QuantizerNeedsHessian, error.Code);
        Assert.Contains("conv1.weight", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unreachable_budget_is_QT1601()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.Sensitivity, Bits = [8], Budget = new BudgetOptions { CompressionRatio = 30 } };
        var error = Assert.Throws<QuantException>(() => MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, null)));
        Assert.Equal(ErrorCode.BudgetInfeasible, error.Code);
    }

    [Fact]
    public void The_same_inputs_give_the_same_choices_and_symbols()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.Sensitivity, Method = QuantizationMethods.Kmeans, Budget = new BudgetOptions { CompressionRatio = 10 } };
        var inputs = new SearchInputs(options, new PruningOptions { Sparsity = 0.3 }, true, null);
        var first = MixedPrecisionSearch.Run(_weights, _values, inputs);
        var second = MixedPrecisionSearch.Run(_weights, _values, inputs, parallelism: 1);
        Assert.Equal(first.Tensors.Select(t => (t.Bits, t.Bytes)), second.Tensors.Select(t => (t.Bits, t.Bytes)));
        Assert.Equal(first.Tensors.SelectMany(t => t.Stored.Quantized!.Symbols), second.Tensors.SelectMany(t => t.Stored.Quantized!.Symbols));
    }
    [Fact]
    public void Calibrated_output_errors_are_the_measured_loss_in_one_pass_per_tensor()
    {
        // A loss that is exactly a per-tensor multiple of the squared error (the Omega of tensors without a layer
        // Hessian): one measurement per tensor must then turn every candidate's cost into that loss, and the
        // tensor the loss weighs 1000 times gets more bits than when all weigh the same.
        var options = new QuantizationOptions { Budget = new BudgetOptions { AverageBits = 3 }, Granularity = Granularity.PerTensor, Omega = OmegaKind.CalibratedOutputError };
        var original = _weights.Select((w, i) => (w.Name, _values[i])).ToDictionary(p => p.Name, p => p.Item2);
        Func<string, float[], double> Loss(string favourite, Action<string> seen) => (name, values) =>
        {
            seen(name);
            var error = 0.0;
            for (var i = 0; i < values.Length; i++)
            {
                error += (double)(values[i] - original[name][i]) * (values[i] - original[name][i]);
            }

            return (name == favourite ? 1000 : 1) * error;
        };

        var measured = new System.Collections.Concurrent.ConcurrentBag<string>();
        var loss = Loss("fc1.weight", measured.Add);
        var weighted = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, null, new LossFunction(loss)));
        var even = MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, null, new LossFunction(Loss("none", _ => { }))));

        var quantized = weighted.Tensors.Where(t => t.Bits is not null).ToList();
        Assert.Equal(quantized.Select(t => t.Weight.Name).Order(), measured.Order());
        Assert.All(quantized, t => Assert.Equal(loss(t.Weight.Name, t.Stored.Quantized!.Dequantize()), t.Omega, 1e-9 * Math.Max(1, t.Omega)));
        Assert.True(weighted.Tensors.Single(t => t.Weight.Name == "fc1.weight").Bits > even.Tensors.Single(t => t.Weight.Name == "fc1.weight").Bits);
    }

    [Theory]
    [InlineData(QuantizationMethods.Uniform, nameof(ColumnOrder.DescendingHessianDiagonal), 0.0)]
    [InlineData(QuantizationMethods.Ecsq, nameof(ColumnOrder.Auto), 0.0)]
    [InlineData(QuantizationMethods.Kmeans, nameof(ColumnOrder.Natural), 0.5)]
    public void A_compensated_candidates_output_error_is_that_of_its_stored_result(string method, string order, double sparsity)
    {
        // The search takes a compensated candidate's output error from the rounding steps, not from a product with
        // H: every choice's Omega must still be the quadratic form of the values the blob will hold.
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        var hessians = LayerHessians.Compute(model, _weights, DataFile.Load(Fixtures.Data("digits-calibration.npz")), samples: 64);
        var options = new QuantizationOptions { Method = method, Omega = OmegaKind.OutputError, Budget = new BudgetOptions { CompressionRatio = 12 } };
        var compensation = new CompensationOptions(Order: Enum.Parse<ColumnOrder>(order));
        var result = MixedPrecisionSearch.Run(_weights, _values,
            new SearchInputs(options, new PruningOptions { Sparsity = sparsity }, true, null, LayerHessians: hessians, Compensation: compensation));

        var checkedTensors = 0;
        foreach (var choice in result.Tensors.Where(t => t.Bits is not null && hessians.ContainsKey(t.Weight.Name)))
        {
            var values = _values[_weights.ToList().FindIndex(w => w.Name == choice.Weight.Name)];
            var reference = hessians[choice.Weight.Name].OutputError(values, choice.Stored.Quantized!.Dequantize());
            Assert.Equal(reference, choice.Omega, 1e-9 * reference);
            checkedTensors++;
        }

        Assert.True(checkedTensors >= 4, $"{checkedTensors} compensated tensors");
    }

    [Fact]
    public void Calibrated_output_errors_without_a_loss_measurement_are_refused()
    {
        var options = new QuantizationOptions { Omega = OmegaKind.CalibratedOutputError };
        Assert.Throws<ArgumentException>(() => MixedPrecisionSearch.Run(_weights, _values, new SearchInputs(options, new PruningOptions(), true, null)));
    }
}
