using System;
using System.Collections.Generic;

namespace QuantTasks.Runtime;

/// <summary>What the build measured and chose for one weight tensor.</summary>
public sealed class QuantizedTensorInfo
{
    /// <summary>Creates the description (generated code calls this).</summary>
    public QuantizedTensorInfo(string name, long parameters, int bits, string method, double sparsity, double sensitivity, long bytes)
    {
        Name = name;
        Parameters = parameters;
        Bits = bits;
        Method = method;
        Sparsity = sparsity;
        Sensitivity = sensitivity;
        Bytes = bytes;
    }

    /// <summary>The initializer's name.</summary>
    public string Name { get; }

    /// <summary>Number of weights.</summary>
    public long Parameters { get; }

    /// <summary>Bits per weight before entropy coding; 32 for a tensor kept in float.</summary>
    public int Bits { get; }

    /// <summary>The quantizer: uniform, kmeans, hessian-kmeans, ecsq, or float.</summary>
    public string Method { get; }

    /// <summary>Fraction of weights pruned to zero.</summary>
    public double Sparsity { get; }

    /// <summary>The Hessian sensitivity the bit search used (0 when none was measured).</summary>
    public double Sensitivity { get; }

    /// <summary>Bytes it takes in the blob: parameters, code tables and coded symbols.</summary>
    public long Bytes { get; }
}

/// <summary>Accuracy the build measured for the float model and for the quantized one.</summary>
public sealed class QuantizedAccuracyInfo
{
    /// <summary>Creates the description (generated code calls this).</summary>
    public QuantizedAccuracyInfo(string metric, double baseline, double quantized, int samples)
    {
        Metric = metric;
        Baseline = baseline;
        Quantized = quantized;
        Samples = samples;
    }

    /// <summary>top1, agreement or cosine.</summary>
    public string Metric { get; }

    /// <summary>The float model's figure, in percent.</summary>
    public double Baseline { get; }

    /// <summary>The quantized model's figure, in percent.</summary>
    public double Quantized { get; }

    /// <summary>Percentage points lost.</summary>
    public double Drop => Baseline - Quantized;

    /// <summary>Evaluation samples used.</summary>
    public int Samples { get; }
}

/// <summary>What the build produced for one model: sizes, bits per tensor, accuracy, content hash.</summary>
public sealed class QuantizedModelInfo
{
    /// <summary>Creates the description (generated code calls this).</summary>
    public QuantizedModelInfo(
        string name,
        string contentHash,
        long originalBytes,
        long compressedBytes,
        QuantizedAccuracyInfo? accuracy,
        IReadOnlyList<QuantizedTensorInfo> tensors)
    {
        Name = name;
        ContentHash = contentHash;
        OriginalBytes = originalBytes;
        CompressedBytes = compressedBytes;
        Accuracy = accuracy;
        Tensors = tensors ?? throw new ArgumentNullException(nameof(tensors));
    }

    /// <summary>The model's name in the policy.</summary>
    public string Name { get; }

    /// <summary>Hex SHA-256 of what the blob was built from; equals the blob's own.</summary>
    public string ContentHash { get; }

    /// <summary>Bytes of the weight tensors as float32.</summary>
    public long OriginalBytes { get; }

    /// <summary>Bytes of the blob's weight payload, codebooks and code tables included.</summary>
    public long CompressedBytes { get; }

    /// <summary>OriginalBytes / CompressedBytes.</summary>
    public double CompressionRatio => CompressedBytes == 0 ? 0 : (double)OriginalBytes / CompressedBytes;

    /// <summary>Accuracy measured at build time, when the policy names evaluation data; otherwise null.</summary>
    public QuantizedAccuracyInfo? Accuracy { get; }

    /// <summary>Each stored tensor.</summary>
    public IReadOnlyList<QuantizedTensorInfo> Tensors { get; }
}
