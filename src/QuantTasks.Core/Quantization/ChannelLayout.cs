namespace QuantTasks.Quantization;

/// <summary>
/// How the elements of a tensor in C order fall into channels: element i belongs to channel
/// (i / inner) % channels, where inner is the product of the dimensions after the channel axis.
/// </summary>
internal static class ChannelLayout
{
    /// <summary>The contiguous runs of elements of one channel: (start, end, channel), in element order.</summary>
    public static IEnumerable<(int Start, int End, int Channel)> Runs(int length, int channels, long inner)
    {
        var i = 0;
        while (i < length)
        {
            for (var c = 0; c < channels && i < length; c++)
            {
                var end = (int)Math.Min(length, i + inner);
                yield return (i, end, c);
                i = end;
            }
        }
    }
}
