using BenchmarkDotNet.Attributes;
using Microsoft.ML.OnnxRuntime;
using QuantTasks.Runtime;

namespace QuantTasks.Benchmarks;

/// <summary>
/// From bytes to a ready session: the blob (verify, decode, dequantize, assemble, load) against ONNX Runtime
/// loading the original float model file.
/// </summary>
[SimpleJob(warmupCount: 3, iterationCount: 15)]
public class SessionBenchmarks
{
    private byte[] _blob = [];
    private string _onnx = "";

    [Params("mlp.onnx", "lenet5.onnx")]
    public string Model { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        _onnx = Workloads.Fixture(Model);
        _blob = Workloads.Blob(Workloads.Load(Model), 4);
    }

    [Benchmark(Baseline = true)]
    public void FloatOnnxFile()
    {
        using var session = new InferenceSession(_onnx);
    }

    [Benchmark]
    public void QuantizedBlob()
    {
        using var session = QuantizedModel.CreateSession(_blob);
    }

    /// <summary>The blob's share: verify and decode into model bytes, no session.</summary>
    public void DecodeOnly() => QuantBlob.Read(_blob).DecodeOnnxModel();
}
