using QuantTasks.Engine.Native;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Hessian;

/// <summary>The repeat that cures libtorch's occasional NaN gradient, and its limit.</summary>
[Collection(LibTorchTestGroup.Name)]
public sealed class TransientNaNTests
{
    [Fact]
    public void A_result_that_comes_back_finite_is_kept_and_the_NaN_ones_are_discarded()
    {
        var results = new Queue<double>([double.NaN, double.NaN, 2.5]);
        var discarded = new List<double>();

        var kept = TransientNaN.Retry(results.Dequeue, double.IsFinite, discarded.Add);

        Assert.Equal(2.5, kept);
        Assert.Equal(2, discarded.Count);
        Assert.All(discarded, d => Assert.True(double.IsNaN(d)));
    }

    [Fact]
    public void A_result_that_stays_NaN_is_returned_after_the_last_attempt()
    {
        var calls = 0;

        var kept = TransientNaN.Retry(() => { calls++; return double.PositiveInfinity; }, double.IsFinite);

        Assert.Equal(TransientNaN.Attempts, calls);
        Assert.Equal(double.PositiveInfinity, kept);
    }

    [Fact]
    public void Tensors_are_finite_only_when_every_element_is()
    {
        QuantTasks.Engine.Native.LibTorch.EnsureLoaded(null);
        using var finite = torch.tensor(new[] { 1f, -2f, 0f });
        using var withNaN = torch.tensor(new[] { 1f, float.NaN });
        using var withInfinity = torch.tensor(new[] { float.NegativeInfinity });

        Assert.True(TransientNaN.AllFinite([finite]));
        Assert.False(TransientNaN.AllFinite([finite, withNaN]));
        Assert.False(TransientNaN.AllFinite([withInfinity]));
        Assert.True(TransientNaN.AllFinite([]));
    }
}
