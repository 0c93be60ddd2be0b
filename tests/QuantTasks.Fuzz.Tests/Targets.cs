using System.Buffers.Binary;
using System.Globalization;
using QuantTasks.Data;
using QuantTasks.Diagnostics;
using QuantTasks.Evaluation;
using QuantTasks.Inspection;
using QuantTasks.Onnx;
using QuantTasks.Policy;
using QuantTasks.Runtime;
using QuantTasks.Runtime.Format;
using QuantTasks.Weights;

namespace QuantTasks.Fuzz.Tests;

/// <summary>The readers of untrusted input, each exercised as the pipeline uses it.</summary>
internal sealed class Targets : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "quanttasks-fuzz", Guid.NewGuid().ToString("N"));
    private long _runs;

    public Targets()
    {
        // The files a fuzzed policy or model may name: the tiny model, its external weights, a data file.
        Directory.CreateDirectory(_folder);
        foreach (var file in Directory.EnumerateFiles(Corpus.Folder("onnx")).Concat(Directory.EnumerateFiles(Corpus.Folder("data"))))
        {
            File.Copy(file, Path.Combine(_folder, Path.GetFileName(file)), overwrite: true);
        }
    }

    public static IReadOnlyList<string> Names { get; } = ["blob", "data", "onnx", "policy"];

    public FuzzTarget For(string name) => name switch
    {
        "blob" => new FuzzTarget(name, Blob),
        "data" => new FuzzTarget(name, Data),
        "onnx" => new FuzzTarget(name, Onnx),
        "policy" => new FuzzTarget(name, Policy, Text: true),
        _ => throw new ArgumentException($"No fuzz target '{name}'.", nameof(name)),
    };

    public void Dispose()
    {
        try
        {
            Directory.Delete(_folder, recursive: true);
        }
        catch (IOException)
        {
            // The OS cleans the temporary folder.
        }
    }

    // The app's reader (QuantBlob) and the command line's (BlobFiles, which also has ONNX Runtime load the decoded
    // model); the latter on every 16th input, as a session costs milliseconds.
    private string Blob(byte[] input)
    {
        // As it is (the checksums reject nearly every mutation), then with its checksums made valid again, so
        // that mutations reach the directory, the coders and the decoder.
        try
        {
            ReadBlob(input);
        }
        catch (QuantBlobException)
        {
            // Expected for most mutations; the repaired blob below is the interesting one.
        }
        catch (QuantException e) when ((int)e.Code < 3000)
        {
            // Likewise.
        }

        return ReadBlob(WithValidChecksums(input));
    }

    private string ReadBlob(byte[] input)
    {
        var blob = QuantBlob.Read(input);
        var model = blob.DecodeOnnxModel();
        if (Interlocked.Increment(ref _runs) % 16 == 0)
        {
            var path = Write("fuzz.qtblob", input);
            BlobFiles.Decode(BlobFiles.Read(path), path);
        }

        return string.Create(CultureInfo.InvariantCulture, $"{blob.Tensors.Count} tensors, {model.Length} bytes");
    }

    /// <summary>The blob's sections as its table cuts them (clamped to the file), assembled again with valid checksums.</summary>
    private static byte[] WithValidChecksums(byte[] blob)
    {
        if (blob.Length < BlobFormat.HeaderSize)
        {
            return blob;
        }

        var count = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(blob.AsSpan(12)), 16);
        var sections = new List<(SectionKind Kind, byte[] Bytes)>();
        for (var i = 0; i < count && BlobFormat.HeaderSize + ((i + 1) * BlobFormat.SectionEntrySize) <= blob.Length; i++)
        {
            var entry = blob.AsSpan(BlobFormat.HeaderSize + (i * BlobFormat.SectionEntrySize));
            var offset = Math.Clamp(BinaryPrimitives.ReadInt64LittleEndian(entry[8..]), 0, blob.Length);
            var length = Math.Clamp(BinaryPrimitives.ReadInt64LittleEndian(entry[16..]), 0, blob.Length - offset);
            sections.Add(((SectionKind)BinaryPrimitives.ReadUInt32LittleEndian(entry), blob.AsSpan((int)offset, (int)length).ToArray()));
        }

        return BlobLayout.Assemble(blob.AsSpan(24, BlobFormat.ContentHashSize), sections);
    }

    // As the pipeline reads calibration and evaluation data: every array, the labels, the finiteness check.
    private string Data(byte[] input)
    {
        var path = Write(input.Length > 1 && input[0] == 0x93 ? "fuzz.npy" : "fuzz.npz", input);
        var data = DataFile.Load(path);
        foreach (var name in data.ArrayNames)
        {
            data.Get(name);
        }

        data.Labels();
        InputChecks.RequireFinite(data);
        return string.Create(CultureInfo.InvariantCulture, $"{data.ArrayNames.Count} arrays");
    }

    // As quantize reads a model: parse, external data, the weight catalog, every weight, and ONNX Runtime's check.
    private string Onnx(byte[] input)
    {
        var path = Write("fuzz.onnx", input);
        var model = OnnxModel.Load(path);
        var weights = WeightCatalog.Find(model);
        foreach (var weight in weights)
        {
            InputChecks.RequireFinite(model.ReadFloats(model.FindTensor(weight.Name)!), weight.Name, path);
        }

        ModelEvaluator.Check(model.ToBytes(), null, null, path);
        return string.Create(CultureInfo.InvariantCulture, $"{weights.Count} weights");
    }

    private string Policy(byte[] input)
    {
        var path = Write("quant.yaml", input);
        var loaded = PolicyLoader.Load(path);
        return string.Create(CultureInfo.InvariantCulture, $"{loaded.Policy.Models.Count} models");
    }

    private string Write(string name, byte[] input)
    {
        var path = Path.Combine(_folder, name);
        File.WriteAllBytes(path, input);
        return path;
    }
}

/// <summary>The committed corpus: seeds and the inputs of past findings, per target.</summary>
internal static class Corpus
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "fuzz-corpus");

    public static string Folder(string target) => Path.Combine(Root, target);

    /// <summary>Every committed input of a target (its seeds and, under crashes/, past findings).</summary>
    public static IReadOnlyList<string> Files(string target) =>
        Directory.EnumerateFiles(Folder(target), "*", SearchOption.AllDirectories)
            .Where(f => !f.EndsWith(".txt", StringComparison.Ordinal) && !f.EndsWith(".weights", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .ToArray();
}
