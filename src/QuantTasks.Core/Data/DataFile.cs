using System.IO.Compression;
using QuantTasks.Diagnostics;

namespace QuantTasks.Data;

/// <summary>
/// A data file of the contract: a NumPy <c>.npz</c> archive of named arrays, or a single <c>.npy</c> array (then
/// named <c>input</c>). Arrays are named after the model's graph inputs, or <c>input</c> for a one-input model;
/// an optional <c>label</c> array holds integer class ids.
/// </summary>
internal sealed class DataFile
{
    /// <summary>How far an archive member may expand; deflate's limit is about 1,030-fold, reached only by constant data.</summary>
    public const int MaxExpansion = 200;

    /// <summary>Members up to this size may expand any amount (a small all-zero mask is legitimate).</summary>
    public const long MaxPlainExpansionBytes = 64L << 20;

    /// <summary>The name of the optional array of integer class ids.</summary>
    public const string LabelArray = "label";

    // Arrays are read when first asked for, so an array the model does not use cannot fail the load.
    private readonly Dictionary<string, NpyArray?> _arrays;
    private readonly bool _isArchive;

    private readonly long _rowLimit = long.MaxValue;

    // The file a view of the first samples was taken from: its arrays are read once, there, and shared (not copied
    // when the view keeps every sample). A view that read the file again held a second copy of the samples: the
    // detector's 32 calibration pages of 640 x 640 are 157 MB.
    private readonly DataFile? _source;
    private readonly Lock _lock = new();

    private DataFile(string path, bool isArchive, IEnumerable<string> names)
    {
        Path = path;
        _isArchive = isArchive;
        _arrays = names.ToDictionary(n => n, _ => (NpyArray?)null, StringComparer.Ordinal);
    }

    private DataFile(DataFile source, long rowLimit)
        : this(source.Path, source._isArchive, source._arrays.Keys)
    {
        _source = source;
        _rowLimit = rowLimit;
    }

    /// <summary>
    /// The same file seen through its first <paramref name="samples"/> samples (for a quick check run, or the
    /// samples one stage takes): it shares this file's arrays, copying only a shortened one's first samples.
    /// </summary>
    public DataFile Take(long samples) => new(_source ?? this, Math.Min(samples, _rowLimit));

    /// <summary>The file's path, as given.</summary>
    public string Path { get; }

    /// <summary>The names of the arrays it holds, sorted.</summary>
    public IReadOnlyList<string> ArrayNames => _arrays.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>Whether it holds an array of that name.</summary>
    public bool Contains(string name) => _arrays.ContainsKey(name);

    /// <summary>Reads a <c>.npz</c> or <c>.npy</c> file.</summary>
    /// <exception cref="QuantException">The file is missing, malformed or truncated, or an array has a dtype the contract does not accept.</exception>
    public static DataFile Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new QuantException(ErrorCode.FileNotFound, $"Data file '{path}' does not exist.", new SourceLocation(path));
        }

        try
        {
            using var stream = InputFile.OpenRead(path, "data file");
            Span<byte> signature = stackalloc byte[4];
            var n = stream.Read(signature);
            stream.Position = 0;
            if (n >= 2 && signature[0] == 0x93 && signature[1] == (byte)'N')
            {
                return new DataFile(path, isArchive: false, ["input"]);
            }

            if (n < 4 || signature[0] != (byte)'P' || signature[1] != (byte)'K')
            {
                throw new QuantException(ErrorCode.DataUnreadable,
                    $"'{path}' is neither a NumPy .npz archive nor a .npy array. Save the data with numpy.savez (arrays named after the model's inputs, plus 'label').",
                    new SourceLocation(path));
            }

            using var archive = new ZipArchive(stream, ZipArchiveMode.Read);
            var names = archive.Entries
                .Where(e => e.FullName.EndsWith(".npy", StringComparison.Ordinal))
                .Select(e => e.FullName[..^4])
                .ToArray();
            if (names.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
            {
                throw new QuantException(ErrorCode.DataUnreadable,
                    $"'{path}' holds two members named '{twice.Key}.npy'; which one counts would be up to each tool. Save the data again with numpy.savez.",
                    new SourceLocation(path));
            }

            return new DataFile(path, isArchive: true, names);
        }
        catch (QuantException e) when (e.Location is null)
        {
            throw new QuantException(e.Code, e.Message, new SourceLocation(path), e.InnerException);
        }
        catch (InvalidDataException e)
        {
            throw new QuantException(ErrorCode.DataTruncated,
                $"'{path}' is a damaged or truncated .npz archive ({e.Message.TrimEnd('.')}). Save it again.", new SourceLocation(path), e);
        }
        catch (IOException e)
        {
            throw new QuantException(ErrorCode.FileAccess, $"Cannot read '{path}': {e.Message}", new SourceLocation(path), e);
        }
    }

    /// <summary>The array of that name.</summary>
    /// <exception cref="QuantException">There is no such array; the message lists the ones there are.</exception>
    public NpyArray Get(string name)
    {
        // Parallel measurements read the same file (and its views their source's arrays): an array is read once.
        lock (_lock)
        {
            if (_arrays.TryGetValue(name, out var array))
            {
                return array ?? (_arrays[name] = (_source?.Get(name) ?? Read(name)).Head(_rowLimit));
            }
        }

        throw new QuantException(ErrorCode.DataMissingArray,
            $"'{Path}' has no array named '{name}'; it holds {string.Join(", ", ArrayNames.Select(a => $"'{a}'"))}. Name the arrays after the model's inputs (or 'input' for a one-input model).",
            new SourceLocation(Path));
    }

    /// <summary>The labels, when the file has a <c>label</c> array.</summary>
    /// <exception cref="QuantException">The label array is not integers or not one-dimensional.</exception>
    public long[]? Labels()
    {
        if (!_arrays.ContainsKey(LabelArray))
        {
            return null;
        }

        var labels = Get(LabelArray);
        if (labels.Integers is null || labels.Shape.Count != 1)
        {
            throw new QuantException(ErrorCode.DataWrongType,
                $"Array 'label' of '{Path}' must be one-dimensional int32 or int64 class ids; it is {labels.DType} with shape ({string.Join(", ", labels.Shape)}).",
                new SourceLocation(Path));
        }

        return labels.Integers;
    }

    private NpyArray Read(string name)
    {
        try
        {
            using var stream = InputFile.OpenRead(Path, "data file");
            if (!_isArchive)
            {
                return NpyReader.Read(stream, name, $"'{Path}'", stream.Length);
            }

            using var archive = new ZipArchive(stream, ZipArchiveMode.Read);
            var entry = archive.GetEntry(name + ".npy")!;
            if (entry.Length > MaxPlainExpansionBytes && entry.Length > MaxExpansion * Math.Max(1, entry.CompressedLength))
            {
                throw new QuantException(ErrorCode.InputTooLarge,
                    FormattableString.Invariant($"Array '{name}' of '{Path}' claims {entry.Length:N0} bytes from {entry.CompressedLength:N0} compressed, more than {MaxExpansion}-fold; refused as a zip bomb. Real data does not compress that far: save it with numpy.savez, or without compression."),
                    new SourceLocation(Path));
            }

            using var member = entry.Open();
            return NpyReader.Read(member, name, $"Array '{name}' of '{Path}'", entry.Length);
        }
        catch (QuantException e) when (e.Location is null)
        {
            throw new QuantException(e.Code, e.Message, new SourceLocation(Path), e.InnerException);
        }
        catch (InvalidDataException e)
        {
            throw new QuantException(ErrorCode.DataTruncated,
                $"Array '{name}' of '{Path}' is damaged or truncated ({e.Message.TrimEnd('.')}). Save the file again.", new SourceLocation(Path), e);
        }
    }
}
