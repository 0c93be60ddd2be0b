using static TorchSharp.torch;

namespace QuantTasks.Engine.Native;

/// <summary>
/// A guard for gradients that libtorch's multi-threaded CPU kernels now and then return with NaN.
/// </summary>
/// <remarks>
/// Seen on the PP-OCRv4 recognizer: from a forward pass with only finite values, about one backward pass in ten
/// on two cores gave NaN for the input gradient of one convolution (and so for every weight before it), while the
/// same call repeated gave the finite result, identical to the last bit to every other run; on one thread it never
/// happened in hundreds of passes. The NaN looks like uninitialised memory meeting a multiplication by zero, so a
/// result that comes back finite is the right one. Each gradient is therefore checked (one reduction, cheap next to
/// a backward pass) and computed again when it is not finite; a gradient that stays NaN is a real error.
/// </remarks>
internal static class TransientNaN
{
    /// <summary>Times a backward pass is tried before a non-finite result is believed.</summary>
    public const int Attempts = 4;

    /// <summary>True when every element of every defined tensor is finite.</summary>
    public static bool AllFinite(IEnumerable<Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        foreach (var t in tensors)
        {
            if (t is null || t.IsInvalid)
            {
                continue;
            }

            using var finite = t.isfinite().all();
            if (!finite.item<bool>())
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Runs <paramref name="compute"/> until its result is finite, at most <see cref="Attempts"/> times, and
    /// returns the last result (finite, or the last non-finite one for the caller to report).
    /// </summary>
    public static T Retry<T>(Func<T> compute, Func<T, bool> isFinite, Action<T>? discard = null)
    {
        ArgumentNullException.ThrowIfNull(compute);
        ArgumentNullException.ThrowIfNull(isFinite);
        for (var attempt = 1; ; attempt++)
        {
            var result = compute();
            if (attempt >= Attempts || isFinite(result))
            {
                return result;
            }

            discard?.Invoke(result);
        }
    }
}
