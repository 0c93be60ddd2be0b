using System;

namespace QuantTasks.Runtime;

/// <summary>
/// ONNX Runtime's native library is not in the application. <c>QuantTasks.Runtime</c> depends only on ONNX
/// Runtime's managed API, so that the application chooses its native build (CPU or GPU); without one, the first
/// session fails to load it. This is a <see cref="DllNotFoundException"/>, so handlers of that still catch it; its
/// message says which package to add.
/// </summary>
public sealed class OnnxRuntimeNotFoundException : DllNotFoundException
{
    /// <summary>What to do, as the message of every instance made without one.</summary>
    internal const string Advice =
        "ONNX Runtime's native library (onnxruntime) is not in this application: QuantTasks.Runtime carries only ONNX Runtime's managed API, " +
        "so that the application chooses its native build. Add the CPU build (dotnet add package Microsoft.ML.OnnxRuntime) " +
        "or the CUDA build (Microsoft.ML.OnnxRuntime.Gpu), then build again.";

    /// <summary>Creates the exception with the advice as its message.</summary>
    public OnnxRuntimeNotFoundException()
        : base(Advice)
    {
    }

    /// <summary>Creates the exception with a message of the caller's.</summary>
    public OnnxRuntimeNotFoundException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message of the caller's and the load failure behind it.</summary>
    public OnnxRuntimeNotFoundException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
