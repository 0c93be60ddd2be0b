namespace QuantTasks.Caching;

/// <summary>
/// Where computed results are kept by content key. The pipeline knows only this: the local folder
/// (<see cref="ContentCache"/>) is one implementation, <see cref="TieredCache"/> puts several in front of each other
/// (a local folder before a shared server), and a new tier is one more subclass.
/// </summary>
internal abstract class ResultCache
{
    /// <summary>Where the cache is, for messages.</summary>
    public abstract string Location { get; }

    /// <summary>The entry for <paramref name="key"/>, verified, or null on a miss. A damaged entry is a miss, never a failure.</summary>
    public abstract CachedResult? TryGet(string key, Action<string>? note = null, CancellationToken cancellation = default);

    /// <summary>Stores an entry. A cache that cannot be written never fails the build; it says so through <paramref name="note"/>.</summary>
    public abstract void Put(string key, CachedResult result, Action<string>? note = null, CancellationToken cancellation = default);
}

/// <summary>
/// Caches asked in order, nearest first: a hit in a farther tier is copied into the nearer ones, and a result is
/// stored in every tier.
/// </summary>
internal sealed class TieredCache : ResultCache
{
    private readonly ResultCache[] _tiers;

    public TieredCache(params ResultCache[] tiers)
    {
        ArgumentNullException.ThrowIfNull(tiers);
        if (tiers.Length == 0)
        {
            throw new ArgumentException("A tiered cache needs at least one tier.", nameof(tiers));
        }

        _tiers = tiers;
    }

    public override string Location => string.Join(" then ", _tiers.Select(t => t.Location));

    public override CachedResult? TryGet(string key, Action<string>? note = null, CancellationToken cancellation = default)
    {
        for (var i = 0; i < _tiers.Length; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            if (_tiers[i].TryGet(key, note, cancellation) is { } hit)
            {
                for (var nearer = 0; nearer < i; nearer++)
                {
                    _tiers[nearer].Put(key, hit, note, cancellation);
                }

                return hit;
            }
        }

        return null;
    }

    public override void Put(string key, CachedResult result, Action<string>? note = null, CancellationToken cancellation = default)
    {
        foreach (var tier in _tiers)
        {
            cancellation.ThrowIfCancellationRequested();
            tier.Put(key, result, note, cancellation);
        }
    }
}
