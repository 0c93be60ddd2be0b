using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace QuantTasks.Compensation;

/// <summary>
/// A scratch file that holds float64 arrays the pipeline keeps but uses one at a time: a large network's layer
/// Hessians are needed together only while they are accumulated, then one layer at a time by the search, the
/// quantize stage and the joint check. Written once, read back by offset from any thread (positional I/O, no shared
/// file position). The file is hidden and lives in the folder given (the output folder, the one place a run may
/// write); it is unlinked as soon as it is open where the OS allows (Unix) and deleted on dispose otherwise, and
/// folders this class had to create are removed again.
/// </summary>
internal sealed class SpillFile : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly string[] _createdFolders;
    private long _length;

    /// <summary>Creates the scratch file in <paramref name="folder"/>.</summary>
    /// <exception cref="IOException">The folder or file cannot be created.</exception>
    /// <exception cref="UnauthorizedAccessException">The folder cannot be written.</exception>
    public SpillFile(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        var full = System.IO.Path.GetFullPath(folder);
        _createdFolders = Missing(full).ToArray();
        Directory.CreateDirectory(full);
        Path = System.IO.Path.Combine(full, $".quant-scratch-{Guid.NewGuid():N}.tmp");
        try
        {
            _handle = File.OpenHandle(Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Delete, FileOptions.DeleteOnClose);
        }
        catch
        {
            RemoveCreatedFolder();
            throw;
        }

        // Where an open file can lose its name, it does so at once: the handle keeps the data until disposed, and
        // not even a killed process leaves the file (or a folder made for it) behind. Windows deletes on close.
        if (!OperatingSystem.IsWindows())
        {
            File.Delete(Path);
            RemoveCreatedFolder();
        }
    }

    /// <summary>The file's path: on Windows until <see cref="Dispose"/>; elsewhere only until the constructor returns.</summary>
    public string Path { get; }

    /// <summary>Bytes written so far.</summary>
    public long Length => Interlocked.Read(ref _length);

    /// <summary>Appends <paramref name="values"/> and returns where they start, for <see cref="Read"/>.</summary>
    /// <exception cref="IOException">The disk is full or the file cannot be written.</exception>
    public long Write(ReadOnlySpan<double> values)
    {
        var bytes = MemoryMarshal.AsBytes(values);
        var offset = Interlocked.Add(ref _length, bytes.Length) - bytes.Length;
        RandomAccess.Write(_handle, bytes, offset);
        return offset;
    }

    /// <summary>Reads <paramref name="into"/>.Length values written at <paramref name="offset"/>.</summary>
    /// <exception cref="IOException">The file ends early or cannot be read.</exception>
    public void Read(long offset, Span<double> into)
    {
        var bytes = MemoryMarshal.AsBytes(into);
        while (bytes.Length > 0)
        {
            var read = RandomAccess.Read(_handle, bytes, offset);
            if (read <= 0)
            {
                throw new IOException($"The scratch file '{Path}' ends at byte {offset}, before the values written there.");
            }

            bytes = bytes[read..];
            offset += read;
        }
    }

    public void Dispose()
    {
        _handle.Dispose();
        RemoveCreatedFolder();
    }

    // The folder and those of its parents that do not exist yet, deepest first.
    private static IEnumerable<string> Missing(string folder)
    {
        for (var at = folder; !string.IsNullOrEmpty(at) && !Directory.Exists(at); at = System.IO.Path.GetDirectoryName(at))
        {
            yield return at;
        }
    }

    // The folders this file needed created, deepest first, while they are empty: a run that fails leaves the
    // output folder as it was.
    private void RemoveCreatedFolder()
    {
        foreach (var folder in _createdFolders)
        {
            try
            {
                if (Directory.EnumerateFileSystemEntries(folder).Any())
                {
                    return;
                }

                Directory.Delete(folder);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return; // something else wrote there meanwhile; the folder is theirs too
            }
        }
    }
}
