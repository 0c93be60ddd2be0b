using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using QuantTasks.Diagnostics;

namespace QuantTasks;

/// <summary>
/// Opens the files that models, policies and data files name. Those arrive in pull requests, so none of them is
/// trusted: a FIFO must not hang the build, <c>/dev/zero</c> must not fill memory, and a symbolic link must not
/// carry a read outside the folder it appears to be in. Every reader of user input opens its file here.
/// </summary>
internal static partial class InputFile
{
    /// <summary>
    /// Opens a regular file for reading without ever blocking on it. Pipes, sockets, devices and folders are
    /// refused with <see cref="ErrorCode.NotARegularFile"/>; a file longer than <paramref name="maxBytes"/> with
    /// <paramref name="tooLarge"/>.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for messages ("ONNX model", "calibration data file").</param>
    /// <param name="location">Where errors point; the file itself when null.</param>
    /// <param name="maxBytes">The largest file the caller can take.</param>
    /// <param name="tooLarge">The code for a file over <paramref name="maxBytes"/>.</param>
    /// <returns>A stream positioned at 0 whose <see cref="Stream.Length"/> is the file's size when it was opened.</returns>
    public static FileStream OpenRead(string path, string what, SourceLocation? location = null,
        long maxBytes = long.MaxValue, ErrorCode tooLarge = ErrorCode.FileAccess)
    {
        ArgumentNullException.ThrowIfNull(path);
        location ??= new SourceLocation(path);
        if (path.Contains('\0', StringComparison.Ordinal))
        {
            throw new QuantException(ErrorCode.FileAccess, $"The {what} path contains a NUL character; no file has such a name.", location);
        }

        if (Directory.Exists(path))
        {
            throw NotRegular(path, what, "a folder", location);
        }

        FileStream stream;
        try
        {
            stream = OperatingSystem.IsWindows()
                ? new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete)
                : new FileStream(OpenNonBlocking(path), FileAccess.Read);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new QuantException(ErrorCode.FileNotFound, $"The {what} '{path}' does not exist.", location, e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QuantException(ErrorCode.FileAccess, $"Cannot read the {what} '{path}': {e.Message}", location, e);
        }

        // A pipe or socket cannot seek; a character or block device reports size 0. Either way there is no
        // content of known size to read, so nothing is read from it at all.
        if (!stream.CanSeek || stream.Length == 0 && !IsEmptyRegularFile(path))
        {
            stream.Dispose();
            throw NotRegular(path, what, "a pipe, socket or device", location);
        }

        if (stream.Length > maxBytes)
        {
            var length = stream.Length;
            stream.Dispose();
            throw new QuantException(tooLarge,
                FormattableString.Invariant($"The {what} '{path}' is {length:N0} bytes; QuantTasks reads at most {maxBytes:N0} bytes of it."),
                location);
        }

        return stream;
    }

    /// <summary>Reads a whole regular file (see <see cref="OpenRead"/>), never more bytes than its size when opened.</summary>
    public static byte[] ReadAllBytes(string path, string what, SourceLocation? location = null,
        long maxBytes = int.MaxValue, ErrorCode tooLarge = ErrorCode.FileAccess)
    {
        using var stream = OpenRead(path, what, location, Math.Min(maxBytes, Array.MaxLength), tooLarge);
        var bytes = new byte[stream.Length];
        var read = 0;
        while (read < bytes.Length)
        {
            var n = stream.Read(bytes, read, bytes.Length - read);
            if (n == 0)
            {
                throw new QuantException(ErrorCode.FileAccess, $"The {what} '{path}' became shorter while it was read.", location ?? new SourceLocation(path));
            }

            read += n;
        }

        return bytes;
    }

    /// <summary>
    /// The path with every symbolic link along it resolved (what POSIX <c>realpath</c> gives), for checks of
    /// the form "this file is inside that folder" that a link must not slip past. Missing components are kept
    /// as they are.
    /// </summary>
    public static string RealPath(string path)
    {
        var pending = new Stack<string>();
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full)!;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries).Reverse())
        {
            pending.Push(part);
        }

        var current = root;
        var hops = 0;
        while (pending.Count > 0)
        {
            var next = Path.Combine(current, pending.Pop());
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.LinkTarget is not { } target)
            {
                current = next;
                continue;
            }

            if (++hops > 64)
            {
                throw new IOException($"Too many levels of symbolic links at '{next}'.");
            }

            // Replace the link by its target and resolve the target's own components in turn.
            var resolved = Path.GetFullPath(target, current);
            var rest = new List<string>();
            while (pending.Count > 0)
            {
                rest.Add(pending.Pop());
            }

            var targetRoot = Path.GetPathRoot(resolved)!;
            var parts = resolved[targetRoot.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
            for (var i = rest.Count - 1; i >= 0; i--)
            {
                pending.Push(rest[i]);
            }

            for (var i = parts.Length - 1; i >= 0; i--)
            {
                pending.Push(parts[i]);
            }

            current = targetRoot;
        }

        return current;
    }

    /// <summary>Whether <paramref name="path"/> is <paramref name="folder"/> or below it, both already full and resolved.</summary>
    public static bool IsInside(string folder, string path)
    {
        var comparison = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        var withSeparator = Path.EndsInDirectorySeparator(folder) ? folder : folder + Path.DirectorySeparatorChar;
        return path.StartsWith(withSeparator, comparison);
    }

    private static bool IsEmptyRegularFile(string path) =>
        new FileInfo(path) is { Exists: true, Length: 0 } && !IsDevicePath(Path.GetFullPath(path));

    // Devices live under /dev on every Unix; a zero-length file elsewhere is an ordinary empty file, whose
    // reader then reports it as empty or truncated.
    private static bool IsDevicePath(string full) =>
        !OperatingSystem.IsWindows() && RealPath(full).StartsWith("/dev/", StringComparison.Ordinal);

    private static QuantException NotRegular(string path, string what, string kind, SourceLocation location) =>
        new(ErrorCode.NotARegularFile,
            $"The {what} '{path}' is {kind}, not a regular file; QuantTasks reads only regular files, so that no input can hang the build or feed it endless data.",
            location);

    /// <summary>
    /// open(2) with O_NONBLOCK: opening a FIFO for reading then returns at once instead of waiting for a writer,
    /// and the seek check above refuses it. Regular files ignore the flag.
    /// </summary>
    private static SafeFileHandle OpenNonBlocking(string path)
    {
        var flags = OperatingSystem.IsMacOS() ? 0x0004 | 0x0100_0000 : 0x0800 | 0x8_0000; // O_NONBLOCK | O_CLOEXEC
        var fd = Open(path, flags);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                2 => new FileNotFoundException($"Could not find file '{path}'.", path), // ENOENT
                20 => new DirectoryNotFoundException($"A folder on the path '{path}' is not a folder."), // ENOTDIR
                13 or 1 => new UnauthorizedAccessException($"Access to the path '{path}' is denied."), // EACCES, EPERM
                _ => new IOException($"open failed with error {errno} ({Marshal.GetPInvokeErrorMessage(errno)})."),
            };
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static partial int Open(string path, int flags);
}
