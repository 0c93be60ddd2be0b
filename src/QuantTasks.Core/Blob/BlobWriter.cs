using System.Buffers.Binary;
using System.Text;
using Google.Protobuf;
using QuantTasks.Coding;
using QuantTasks.Onnx;
using QuantTasks.Runtime.Format;

namespace QuantTasks.Blob;

/// <summary>What writing a blob produced.</summary>
/// <param name="Bytes">The blob.</param>
/// <param name="PayloadBytes">Bytes of the weight payload section.</param>
/// <param name="TensorBytes">Each stored tensor's payload bytes (parameters, tables, coded symbols), by name.</param>
/// <param name="Coders">Each quantized tensor's chosen coder, by name.</param>
internal sealed record BlobResult(byte[] Bytes, long PayloadBytes, IReadOnlyDictionary<string, long> TensorBytes, IReadOnlyDictionary<string, string> Coders);

/// <summary>
/// Writes blob format v1 (docs/blob-format.md): the model's graph without the stored weights, a directory of
/// the stored tensors, and their payloads. The frame (header, section table, checksums) comes from
/// QuantTasks.Runtime, the same code that verifies it.
/// </summary>
internal static class BlobWriter
{
    /// <summary>Writes the blob for <paramref name="model"/> with <paramref name="tensors"/> stored in it.</summary>
    /// <param name="model">The source model; its other initializers and nodes go into the graph section as they are.</param>
    /// <param name="tensors">The weights to store, quantized or in float.</param>
    /// <param name="contentHash">SHA-256 of what the blob is built from (32 bytes).</param>
    /// <param name="metadata">Key-value strings to record (model name, producer, source).</param>
    /// <param name="entropy">Whether symbols may be entropy-coded (Huffman); otherwise fixed width.</param>
    public static BlobResult Write(OnnxModel model, IReadOnlyList<StoredTensor> tensors, ReadOnlySpan<byte> contentHash,
        IReadOnlyDictionary<string, string> metadata, bool entropy)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(metadata);

        var payload = new List<byte>();
        var directory = new List<byte>();
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        var coders = new Dictionary<string, string>(StringComparer.Ordinal);
        var header = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(header, tensors.Count);
        directory.AddRange(header);
        foreach (var tensor in tensors)
        {
            var entry = new TensorEntry
            {
                Name = tensor.Name,
                ElementType = tensor.ElementType,
                Dims = tensor.Dims.ToArray(),
                PayloadOffset = payload.Count,
            };
            if (tensor.Quantized is { } q)
            {
                var coded = SymbolEncoder.Encode(q.Symbols, q.Bits, entropy);
                entry.Quantizer = q.Kind;
                entry.Bits = q.Bits;
                entry.Coder = coded.Coder;
                entry.Group = coded.Group;
                entry.ZeroSymbol = coded.RunSymbol;
                entry.ChannelAxis = q.ChannelAxis;
                entry.Channels = q.Channels;
                entry.Method = q.Method;
                payload.AddRange(q.ParameterBytes());
                payload.AddRange(coded.Tables);
                payload.AddRange(coded.Stream);
                coders[tensor.Name] = coded.Coder.ToString();
            }
            else
            {
                entry.Quantizer = QuantizerKind.Float;
                entry.Coder = CoderKind.Raw;
                entry.ChannelAxis = -1;
                entry.Channels = 1;
                entry.Method = "float";
                var raw = new byte[tensor.FloatValues!.Length * 4];
                for (var i = 0; i < tensor.FloatValues.Length; i++)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(raw.AsSpan(i * 4), tensor.FloatValues[i]);
                }

                payload.AddRange(raw);
            }

            entry.PayloadLength = payload.Count - entry.PayloadOffset;
            sizes[tensor.Name] = entry.PayloadLength;
            entry.Write(directory);
        }

        var sections = new List<(SectionKind, byte[])>
        {
            (SectionKind.Metadata, Metadata(metadata)),
            (SectionKind.Graph, StrippedGraph(model, tensors.Select(t => t.Name).ToHashSet(StringComparer.Ordinal))),
            (SectionKind.TensorDirectory, directory.ToArray()),
            (SectionKind.Payload, payload.ToArray()),
        };
        return new BlobResult(BlobLayout.Assemble(contentHash, sections), payload.Count, sizes, coders);
    }

    /// <summary>
    /// The model without the stored tensors: their initializers removed, and <c>Constant</c> nodes holding them
    /// removed (the runtime supplies each as an initializer of the same name, which ONNX treats alike).
    /// </summary>
    internal static byte[] StrippedGraph(OnnxModel model, IReadOnlySet<string> stored)
    {
        var copy = model.Proto.Clone();
        var graph = copy.Graph;
        for (var i = graph.Initializer.Count - 1; i >= 0; i--)
        {
            if (stored.Contains(graph.Initializer[i].Name))
            {
                graph.Initializer.RemoveAt(i);
            }
        }

        for (var i = graph.Node.Count - 1; i >= 0; i--)
        {
            var node = graph.Node[i];
            if (node.OpType == "Constant" && node.Output.Count == 1 && stored.Contains(node.Output[0]))
            {
                graph.Node.RemoveAt(i);
            }
        }

        return copy.ToByteArray();
    }

    private static byte[] Metadata(IReadOnlyDictionary<string, string> metadata)
    {
        var bytes = new List<byte>();
        var scratch = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(scratch, metadata.Count);
        bytes.AddRange(scratch);
        foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            var k = Encoding.UTF8.GetBytes(key);
            var v = Encoding.UTF8.GetBytes(value);
            BinaryPrimitives.WriteUInt16LittleEndian(scratch, checked((ushort)k.Length));
            bytes.AddRange(scratch.AsSpan(0, 2));
            bytes.AddRange(k);
            BinaryPrimitives.WriteInt32LittleEndian(scratch, v.Length);
            bytes.AddRange(scratch);
            bytes.AddRange(v);
        }

        return bytes.ToArray();
    }
}
