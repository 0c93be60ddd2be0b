namespace QuantTasks.Progress;

/// <summary>
/// Reports on the reporting thread, at once and in order (<see cref="Progress{T}"/> posts to the thread pool, so
/// its reports can arrive after the work is done, out of order). The handler must be thread-safe where the
/// work reports from several threads.
/// </summary>
/// <typeparam name="T">The report type.</typeparam>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    /// <inheritdoc/>
    public void Report(T value) => report(value);
}
