namespace QuantTasks;

/// <summary>
/// Writes files under a temporary name in the same folder and renames them into place, so that a crash or a
/// concurrent reader never sees half a file.
/// </summary>
internal static class AtomicFile
{
    /// <summary>Writes <paramref name="text"/> (UTF-8, no byte-order mark) to <paramref name="path"/> atomically.</summary>
    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text));

    /// <summary>
    /// Writes <paramref name="bytes"/> atomically unless the file already holds exactly them, so that outputs
    /// which did not change keep their timestamps and the build steps downstream of them stay up to date.
    /// </summary>
    /// <returns>Whether the file was written.</returns>
    public static bool WriteIfChanged(string path, ReadOnlySpan<byte> bytes)
    {
        if (File.Exists(path) && new FileInfo(path) is { LinkTarget: null } existing && existing.Length == bytes.Length && SameBytes(path, bytes))
        {
            return false;
        }

        WriteAllBytes(path, bytes);
        return true;
    }

    private static bool SameBytes(string path, ReadOnlySpan<byte> bytes)
    {
        try
        {
            return bytes.SequenceEqual(File.ReadAllBytes(path));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false; // Unreadable: written anew, which reports the problem if there is one.
        }
    }

    /// <summary>Text (UTF-8, no byte-order mark) through <see cref="WriteIfChanged(string, ReadOnlySpan{byte})"/>.</summary>
    public static bool WriteIfChanged(string path, string text) =>
        WriteIfChanged(path, new System.Text.UTF8Encoding(false).GetBytes(text));

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/> atomically.</summary>
    /// <exception cref="Diagnostics.QuantException"><see cref="Diagnostics.ErrorCode.FileAccess"/> when the file or its folder cannot be written.</exception>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        try
        {
            Write(path, bytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Diagnostics.QuantException(Diagnostics.ErrorCode.FileAccess,
                $"Cannot write '{path}': {e.Message} Check that the folder exists or can be created, and is writable.",
                new Diagnostics.SourceLocation(path), e);
        }
    }

    private static void Write(string path, ReadOnlySpan<byte> bytes)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var temp = $"{full}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The folder itself is unwritable; there is no temporary file to remove.
            }

            throw;
        }
    }
}
