using QuantTasks.Blob;
using QuantTasks.Compensation;
using QuantTasks.Data;
using QuantTasks.Onnx;
using QuantTasks.Quantization;

namespace QuantTasks.Search;

/// <summary>
/// GPTQ's sequential mode, after the search: the layers are compensated again one at a time in graph order, each
/// on the inputs that the already-quantized layers before it produce (the float model's activations drift once
/// earlier layers are rounded, and the later layers then correct for that drift). The bits, sparsity and levels
/// the search chose stay; only the symbols change, so a layer's coded size can move a little either way: a new
/// result is taken only while the payload stays within the budget, so the budget still holds to the byte.
/// </summary>
internal static class SequentialCompensation
{
    /// <summary>The refined choices and stored tensors.</summary>
    /// <param name="Search">The search result with each refined choice's new Hessian and exact size.</param>
    /// <param name="Stored">The tensors as the blob stores them, in the search's order.</param>
    /// <param name="Refined">How many layers took their sequential result.</param>
    internal sealed record Outcome(SearchResult Search, StoredTensor[] Stored, int Refined);

    /// <summary>Refines every compensated choice of <paramref name="search"/>, in graph order.</summary>
    /// <param name="model">The float model.</param>
    /// <param name="search">The search's choices (those with a compensation input are refined).</param>
    /// <param name="values">The tensors' float values, in the search's order.</param>
    /// <param name="stored">The tensors quantized as the search measured them.</param>
    /// <param name="data">Calibration samples.</param>
    /// <param name="samples">How many of them make each layer's Hessian.</param>
    /// <param name="settings">The quantizer settings of the search.</param>
    /// <param name="entropy">Whether the blob is entropy-coded (for exact sizes).</param>
    /// <param name="cancellation">Stops between layers.</param>
    public static Outcome Run(OnnxModel model, SearchResult search, IReadOnlyList<float[]> values, StoredTensor[] stored, DataFile data, int samples,
        QuantizerSettings settings, bool entropy, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(search);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(stored);
        ArgumentNullException.ThrowIfNull(settings);
        var choices = search.Tensors.ToArray();
        var tensors = (StoredTensor[])stored.Clone();
        var index = Enumerable.Range(0, choices.Length).ToDictionary(t => choices[t].Weight.Name, StringComparer.Ordinal);
        var current = Enumerable.Range(0, choices.Length).ToDictionary(t => choices[t].Weight.Name, t => Decoded(tensors[t]), StringComparer.Ordinal);
        var payload = choices.Sum(c => c.Bytes);
        var refined = 0;
        var layers = LayerHessians.InGraphOrder(model, choices.Where(c => c.Compensation is not null).Select(c => c.Weight));
        foreach (var weight in layers)
        {
            cancellation.ThrowIfCancellationRequested();
            var t = index[weight.Name];
            var choice = choices[t];

            // Every other tensor as it stands now: the layers before this one are final, and the ones after it do
            // not reach its input.
            var replaced = current.Where(e => e.Key != weight.Name).ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
            var hessian = LayerHessians.Compute(model, [weight], data, samples, cancellation: cancellation, replaced: replaced)[weight.Name];
            var candidate = choice with { Compensation = choice.Compensation! with { Hessian = hessian } };
            var result = MixedPrecisionSearch.Quantize(candidate, values[t], settings);
            var bytes = result.Quantized is { } q ? PayloadSize.Of(q, entropy) : PayloadSize.KeptInFloat(values[t].Length);
            if (payload - choice.Bytes + bytes > search.Budget)
            {
                continue;
            }

            payload += bytes - choice.Bytes;
            choices[t] = candidate with { Bytes = bytes };
            tensors[t] = result;
            current[weight.Name] = Decoded(result);
            refined++;
        }

        return new Outcome(search with { Tensors = choices, PayloadBytes = payload }, tensors, refined);
    }

    private static float[] Decoded(StoredTensor tensor) => tensor.Quantized?.Dequantize() ?? tensor.FloatValues!;
}
