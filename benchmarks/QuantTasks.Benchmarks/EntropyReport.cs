using QuantTasks.Coding;
using QuantTasks.Runtime;

namespace QuantTasks.Benchmarks;

/// <summary>
/// How close the blob's weight payload comes to the order-0 entropy of its symbol streams plus the side
/// information every coder needs (levels and code tables): the limit of any per-tensor symbol coder.
/// </summary>
internal static class EntropyReport
{
    public static void Print()
    {
        Console.WriteLine("| model | bits | payload B | entropy bound B | payload / bound |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var file in new[] { "mlp.onnx", "lenet5.onnx" })
        {
            foreach (var bits in new[] { 2, 3, 4, 6, 8 })
            {
                var model = Workloads.Load(file);
                var tensors = Workloads.Quantize(model, bits);
                var blob = QuantBlob.Read(Workloads.Blob(model, bits));
                double bound = 0;
                foreach (var tensor in tensors)
                {
                    var histogram = SymbolEncoder.Histogram(tensor.Symbols, bits);
                    var n = (double)tensor.Symbols.Length;
                    var entropyBits = histogram.Where(c => c > 0).Sum(c => -c * Math.Log2(c / n));
                    var side = tensor.Parameters.Length * 4 + SymbolEncoder.EncodeHuffman(tensor.Symbols, bits).Tables.Length;
                    bound += (entropyBits / 8) + side;
                }

                Console.WriteLine(FormattableString.Invariant($"| {file} | {bits} | {blob.PayloadLength:N0} | {bound:N0} | {blob.PayloadLength / bound:0.0000} |"));
            }
        }
    }
}
