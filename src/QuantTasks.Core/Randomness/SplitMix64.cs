namespace QuantTasks.Randomness;

/// <summary>
/// A small, fully specified random generator (SplitMix64), so that probe vectors depend only on the seed and
/// the probe's index, and k-means seeding only on the seed, on every platform and .NET version.
/// </summary>
internal struct SplitMix64
{
    private ulong _state;

    /// <summary>A generator for one (seed, stream) pair; distinct streams are independent sequences.</summary>
    public SplitMix64(long seed, long stream)
    {
        _state = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL) ^ unchecked((ulong)stream * 0xD1B54A32D192ED03UL);
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong Next()
    {
        var z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>+1 or -1 with equal probability, 64 at a time from one draw.</summary>
    public void Rademacher(Span<float> values)
    {
        for (var i = 0; i < values.Length; i += 64)
        {
            var bits = Next();
            var end = Math.Min(values.Length, i + 64);
            for (var j = i; j < end; j++, bits >>= 1)
            {
                values[j] = (bits & 1) == 0 ? 1f : -1f;
            }
        }
    }

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (Next() >> 11) / 9007199254740992.0;

    /// <summary>Standard normal values (Box-Muller).</summary>
    public void Normal(Span<float> values)
    {
        for (var i = 0; i < values.Length; i += 2)
        {
            var u1 = ((Next() >> 11) + 1.0) / 9007199254740993.0;
            var u2 = (Next() >> 11) / 9007199254740992.0;
            var radius = Math.Sqrt(-2 * Math.Log(u1));
            values[i] = (float)(radius * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < values.Length)
            {
                values[i + 1] = (float)(radius * Math.Sin(2 * Math.PI * u2));
            }
        }
    }
}
