using QuantTasks.Blob;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Quantization;
using QuantTasks.Search;
using QuantTasks.Tests;
using QuantTasks.Weights;

namespace QuantTasks.Core.Tests.Search;

/// <summary>
/// The joint check on LeNet-5's weights with losses whose interactions are known in closed form: additive losses
/// pass untouched; a tensor whose error hurts more in company than alone gets its bits back, within the budget.
/// </summary>
public sealed class JointCheckTests
{
    private readonly IReadOnlyList<WeightTensor> _weights;
    private readonly float[][] _values;
    private readonly QuantizationOptions _options = new()
    {
        Omega = OmegaKind.Sensitivity, // the plain search: sensitivity (1 here) x squared error
        Method = QuantizationMethods.Uniform,
        Granularity = Granularity.PerTensor,
        Bits = [2, 3, 4, 5, 6],
        Budget = new BudgetOptions { AverageBits = 3.5 },
        KeepFloat = ["*bias*"],
    };

    public JointCheckTests()
    {
        var model = OnnxModel.Load(Fixtures.Model("lenet5.onnx"));
        _weights = WeightCatalog.Find(model);
        _values = _weights.Select(w => model.ReadFloats(model.FindTensor(w.Name)!)).ToArray();
    }

    private int Index(string name) => _weights.Select(w => w.Name).ToList().IndexOf(name);

    // The squared error of replaced values, the per-tensor part of every synthetic loss below.
    private double Error(int tensor, float[] values)
    {
        double sum = 0;
        for (var i = 0; i < values.Length; i++)
        {
            var d = (double)values[i] - _values[tensor][i];
            sum += d * d;
        }

        return sum;
    }

    // Squared errors, except that one tensor's costs 50 times more once any other tensor is quantized beside it.
    private double WorseInCompany(IReadOnlyList<(int Tensor, float[] Values)> replaced, int tensor) =>
        replaced.Sum(r => Error(r.Tensor, r.Values))
        + (replaced.Any(r => r.Tensor != tensor) ? replaced.Where(r => r.Tensor == tensor).Sum(r => 49 * Error(r.Tensor, r.Values)) : 0);

    private (SearchResult Search, StoredTensor[] Stored) Search()
    {
        var plans = TensorPlan.For(_weights, _options, QuantizerRegistry.Default);
        var search = MixedPrecisionSearch.Choose(plans, _values, new SearchInputs(_options, new PruningOptions(), true, null));
        var settings = QuantizerSettings.From(_options);
        return (search, search.Tensors.Select((c, t) => MixedPrecisionSearch.Quantize(c, _values[t], settings)).ToArray());
    }

    [Fact]
    public void A_loss_that_adds_up_passes_with_one_pass_per_tensor_and_one_more()
    {
        var (search, stored) = Search();
        var quantized = search.Tensors.Count(c => c.Bits is not null);

        var outcome = JointCheck.Run(search, _values, stored, QuantizerSettings.From(_options),
            replaced => replaced.Sum(r => Error(r.Tensor, r.Values)), omegaIsLoss: false, new JointCheckOptions(0.25, 2));

        Assert.False(outcome.Report.Corrected);
        Assert.Equal(0, outcome.Report.Rounds);
        Assert.Equal(quantized + 1, outcome.Report.Passes);
        Assert.Equal(outcome.Report.Assumed, outcome.Report.Measured, 9);
        Assert.Same(search, outcome.Search);
        Assert.Equal(stored, outcome.Stored);
    }

    [Fact]
    public void When_the_search_s_omega_is_the_loss_no_tensor_is_measured_alone()
    {
        var (search, stored) = Search();

        var outcome = JointCheck.Run(search, _values, stored, QuantizerSettings.From(_options),
            replaced => replaced.Sum(r => Error(r.Tensor, r.Values)), omegaIsLoss: true, new JointCheckOptions(0.25, 2));

        Assert.Equal(1, outcome.Report.Passes);
        Assert.Equal(search.Tensors.Sum(c => c.Omega), outcome.Report.Assumed, 9);
    }

    [Fact]
    public void An_omega_that_only_estimates_the_loss_is_measured_alone_only_when_the_gate_calls_for_a_correction_the_sum_did_not()
    {
        // Calibrated output errors: the Omega stands for each tensor's own loss while the sum holds (one pass);
        // once the gate calls for a correction, each tensor is measured alone to pick the ones to correct.
        var fc2 = Index("fc2.weight");
        double Loss(IReadOnlyList<(int Tensor, float[] Values)> replaced) =>
            replaced.Sum(r => (r.Tensor == fc2 ? 50 : 1) * Error(r.Tensor, r.Values));
        var (search, stored) = Search();
        var settings = QuantizerSettings.From(_options);
        var quantized = search.Tensors.Count(c => c.Bits is not null);
        var measuredAlone = 0;
        double Counting(IReadOnlyList<(int Tensor, float[] Values)> replaced)
        {
            if (replaced.Count == 1 && quantized > 1)
            {
                Interlocked.Increment(ref measuredAlone);
            }

            return Loss(replaced);
        }

        var passing = JointCheck.Run(search, _values, stored, settings, Counting, omegaIsLoss: true, new JointCheckOptions(100, 3),
            gateFails: _ => false, measureAloneToCorrect: true);
        Assert.Equal(1, passing.Report.Passes);
        Assert.Equal(0, measuredAlone);

        var initial = passing.Report.Measured;
        var corrected = JointCheck.Run(search, _values, stored, settings, Counting, omegaIsLoss: true, new JointCheckOptions(100, 3),
            gateFails: replaced => Loss(replaced) > 0.8 * initial, measureAloneToCorrect: true);
        Assert.Equal("gate", corrected.Report.Trigger);
        Assert.True(measuredAlone >= quantized, $"{measuredAlone} tensors measured alone of {quantized}");
        Assert.Contains("fc2.weight", corrected.Report.Moved);
        Assert.True(corrected.Report.Final <= 0.8 * initial, $"{corrected.Report.Final} against {initial}");
        Assert.Equal(search.Tensors.Sum(c => c.Omega), corrected.Report.Assumed, 9);

        // When the sum itself fails (fc2 compounds in company), leave-one-out shows the culprits: nothing alone.
        measuredAlone = 0;
        double Compounding(IReadOnlyList<(int Tensor, float[] Values)> replaced) =>
            Counting(replaced) + (replaced.Any(r => r.Tensor != fc2) ? replaced.Where(r => r.Tensor == fc2).Sum(r => 49 * Error(r.Tensor, r.Values)) : 0);
        var margin = JointCheck.Run(search, _values, stored, settings, Compounding, omegaIsLoss: true, new JointCheckOptions(0.25, 2),
            measureAloneToCorrect: true);
        Assert.Equal("margin", margin.Report.Trigger);
        Assert.Equal(0, measuredAlone);
        Assert.Contains("fc2.weight", margin.Report.Moved);
    }

    [Fact]
    public void A_tensor_that_hurts_more_in_company_gets_more_bits_and_the_budget_still_holds()
    {
        // fc2's error costs what the search thinks alone, and 50 times more once any other tensor is quantized:
        // the summed costs under-rate it, and only the joint measurement can tell. (The search gives it 4 bits of 6.)
        var fc2 = Index("fc2.weight");
        double Loss(IReadOnlyList<(int Tensor, float[] Values)> replaced) => WorseInCompany(replaced, fc2);

        var (search, stored) = Search();
        var settings = QuantizerSettings.From(_options);

        var outcome = JointCheck.Run(search, _values, stored, settings, Loss, omegaIsLoss: false, new JointCheckOptions(0.25, 2));

        Assert.True(outcome.Report.Corrected, $"{outcome.Report}");
        Assert.Contains("fc2.weight", outcome.Report.Moved);
        Assert.True(outcome.Search.Tensors[fc2].Bits > search.Tensors[fc2].Bits, $"{outcome.Search.Tensors[fc2].Bits} bits, was {search.Tensors[fc2].Bits}");
        Assert.True(outcome.Report.Final < outcome.Report.Measured, $"{outcome.Report.Final} >= {outcome.Report.Measured}");

        // What the check hands on is exactly what the search would have stored for those choices, and fits.
        Assert.True(outcome.Search.PayloadBytes <= outcome.Search.Budget, $"{outcome.Search.PayloadBytes} > {outcome.Search.Budget}");
        Assert.Equal(outcome.Search.Tensors.Sum(c => c.Bytes), outcome.Search.PayloadBytes);
        for (var t = 0; t < outcome.Stored.Length; t++)
        {
            var expected = MixedPrecisionSearch.Quantize(outcome.Search.Tensors[t], _values[t], settings);
            Assert.Equal(expected.Quantized?.Dequantize() ?? expected.FloatValues, outcome.Stored[t].Quantized?.Dequantize() ?? outcome.Stored[t].FloatValues);
            if (outcome.Stored[t].Quantized is { } q)
            {
                Assert.Equal(outcome.Search.Tensors[t].Bytes, PayloadSize.Of(q, true));
            }
        }

        // The final loss is the loss of what is handed on.
        var handedOn = Enumerable.Range(0, outcome.Stored.Length).Where(t => outcome.Stored[t].Quantized is not null)
            .Select(t => (t, outcome.Stored[t].Quantized!.Dequantize())).ToArray();
        Assert.Equal(Loss(handedOn), outcome.Report.Final, 9);
    }

    [Fact]
    public void A_choice_refined_after_the_search_keeps_its_own_size_when_the_correction_moves_other_tensors()
    {
        // Sequential compensation refines a choice after the search: same bits and levels, other symbols, a size a
        // few bytes off the candidate's. When the correction moves fc2, conv2 must be handed on either refined with
        // the refined size, or back to the search's own result with the candidate's size, and the budget must hold.
        var fc2 = Index("fc2.weight");
        var conv2 = Index("conv2.weight");
        double Loss(IReadOnlyList<(int Tensor, float[] Values)> replaced) => WorseInCompany(replaced, fc2);

        var (search, stored) = Search();
        var settings = QuantizerSettings.From(_options);
        var noise = new Random(3);
        var nudged = _values[conv2].Select(v => v + (float)((noise.NextDouble() - 0.5) * 0.02 * Math.Abs(v))).ToArray();
        var refinedStored = MixedPrecisionSearch.Quantize(search.Tensors[conv2], nudged, settings);
        var refinedBytes = PayloadSize.Of(refinedStored.Quantized!, true);
        Assert.NotEqual(search.Tensors[conv2].Bytes, refinedBytes);
        var tensors = search.Tensors.ToArray();
        tensors[conv2] = tensors[conv2] with { Bytes = refinedBytes };
        var refined = search with { Tensors = tensors, PayloadBytes = tensors.Sum(c => c.Bytes) };
        var refinedTensors = stored.ToArray();
        refinedTensors[conv2] = refinedStored;

        var outcome = JointCheck.Run(refined, _values, refinedTensors, settings, Loss, omegaIsLoss: false, new JointCheckOptions(0.25, 2));

        Assert.Contains("fc2.weight", outcome.Report.Moved);
        Assert.DoesNotContain("conv2.weight", outcome.Report.Moved);
        for (var t = 0; t < outcome.Stored.Length; t++)
        {
            if (outcome.Stored[t].Quantized is { } q)
            {
                Assert.Equal(outcome.Search.Tensors[t].Bytes, PayloadSize.Of(q, true));
            }
        }

        var kept = outcome.Stored[conv2].Quantized!.Symbols.SequenceEqual(refinedStored.Quantized!.Symbols);
        var own = MixedPrecisionSearch.Quantize(search.Tensors[conv2], _values[conv2], settings).Quantized!.Symbols;
        Assert.True(kept || outcome.Stored[conv2].Quantized!.Symbols.SequenceEqual(own), "conv2 is neither the refined result nor the search's own");
        Assert.Equal(outcome.Search.Tensors.Sum(c => c.Bytes), outcome.Search.PayloadBytes);
        Assert.True(outcome.Search.PayloadBytes <= outcome.Search.Budget, $"{outcome.Search.PayloadBytes} > {outcome.Search.Budget}");
    }

    [Fact]
    public void Losses_that_add_up_are_corrected_when_the_gate_would_fail_and_left_alone_when_it_would_pass()
    {
        // fc2's error costs 50 times what the search's Omega says, alone as in company: the losses add up, so the
        // margin passes, but the gate (here: the joint loss under a fifth below the search's) would fail.
        var fc2 = Index("fc2.weight");
        double Loss(IReadOnlyList<(int Tensor, float[] Values)> replaced) =>
            replaced.Sum(r => (r.Tensor == fc2 ? 50 : 1) * Error(r.Tensor, r.Values));
        var (search, stored) = Search();
        var settings = QuantizerSettings.From(_options);
        var initial = Loss(Enumerable.Range(0, stored.Length).Where(t => stored[t].Quantized is not null).Select(t => (t, stored[t].Quantized!.Dequantize())).ToArray());
        var gateCalls = 0;
        bool Gate(IReadOnlyList<(int Tensor, float[] Values)> replaced)
        {
            gateCalls++;
            return Loss(replaced) > 0.8 * initial;
        }

        var outcome = JointCheck.Run(search, _values, stored, settings, Loss, omegaIsLoss: false, new JointCheckOptions(0.25, 3), gateFails: Gate);

        Assert.Equal("gate", outcome.Report.Trigger);
        Assert.Equal(outcome.Report.Assumed, outcome.Report.Measured, 9);
        Assert.Contains("fc2.weight", outcome.Report.Moved);
        Assert.True(outcome.Search.Tensors[fc2].Bits > search.Tensors[fc2].Bits, $"{outcome.Search.Tensors[fc2].Bits} bits, was {search.Tensors[fc2].Bits}");
        Assert.True(outcome.Report.Final <= 0.8 * initial, $"{outcome.Report.Final} against {initial}: the gate would still fail");
        Assert.True(outcome.Search.PayloadBytes <= outcome.Search.Budget, $"{outcome.Search.PayloadBytes} > {outcome.Search.Budget}");
        Assert.True(gateCalls >= 2);

        // The same losses with a gate that would pass: nothing is touched.
        var passing = JointCheck.Run(search, _values, stored, settings, Loss, omegaIsLoss: false, new JointCheckOptions(0.25, 3), gateFails: _ => false);
        Assert.Null(passing.Report.Trigger);
        Assert.False(passing.Report.Corrected);
        Assert.Same(search, passing.Search);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(12)]
    [InlineData(17)]
    [InlineData(22)]
    public void The_check_never_takes_more_passes_than_allowed(int maxPasses)
    {
        // The compounding fc2 of the test above: unbounded, the check takes more passes than any of these limits.
        var fc2 = Index("fc2.weight");
        double Loss(IReadOnlyList<(int Tensor, float[] Values)> replaced) => WorseInCompany(replaced, fc2);
        var (search, stored) = Search();
        var settings = QuantizerSettings.From(_options);
        var unbounded = JointCheck.Run(search, _values, stored, settings, Loss, omegaIsLoss: false, new JointCheckOptions(0.25, 2));
        Assert.True(unbounded.Report.Passes > 22, $"{unbounded.Report.Passes} passes");

        var outcome = JointCheck.Run(search, _values, stored, settings, Loss, omegaIsLoss: false, new JointCheckOptions(0.25, 2, MaxPasses: maxPasses));

        Assert.True(outcome.Report.Passes <= maxPasses, $"{outcome.Report.Passes} passes, at most {maxPasses} allowed");
        Assert.True(outcome.Report.Final <= outcome.Report.Measured);
        Assert.True(outcome.Search.PayloadBytes <= outcome.Search.Budget);
    }

    [Fact]
    public void A_correction_that_would_not_lower_the_joint_loss_is_not_kept()
    {
        // Every tensor's error is worth nothing alone and a constant in company: no choice is better than another.
        var (search, stored) = Search();

        var outcome = JointCheck.Run(search, _values, stored, QuantizerSettings.From(_options),
            replaced => replaced.Count > 1 ? 1.0 : 0.0, omegaIsLoss: false, new JointCheckOptions(0.25, 3));

        Assert.False(outcome.Report.Corrected);
        Assert.Equal(1.0, outcome.Report.Final);
        Assert.Same(search, outcome.Search);
    }
}
