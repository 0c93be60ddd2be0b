namespace QuantTasks.Runtime.Tests;

/// <summary>
/// An application without ONNX Runtime's native package fails on its first session; the runtime turns that load
/// failure, as ONNX Runtime raises it (a DllNotFoundException, or the TypeInitializationException of its native
/// methods around one), into advice that names the package, and leaves every other failure alone.
/// </summary>
public sealed class NativeLibraryAdviceTests
{
    [Fact]
    public void A_missing_native_library_names_the_packages_to_add()
    {
        var direct = Assert.Throws<OnnxRuntimeNotFoundException>(() =>
            QuantizedModel.WithNativeAdvice<object>(() => throw new DllNotFoundException("Unable to load shared library 'onnxruntime'")));
        var wrapped = Assert.Throws<OnnxRuntimeNotFoundException>(() => QuantizedModel.WithNativeAdvice<object>(() =>
            throw new TypeInitializationException("Microsoft.ML.OnnxRuntime.NativeMethods", new DllNotFoundException("onnxruntime"))));

        foreach (var e in new[] { direct, wrapped })
        {
            Assert.Contains("Microsoft.ML.OnnxRuntime", e.Message, StringComparison.Ordinal);
            Assert.Contains("Microsoft.ML.OnnxRuntime.Gpu", e.Message, StringComparison.Ordinal);
            Assert.NotNull(e.InnerException);
            Assert.IsAssignableFrom<DllNotFoundException>(e);
        }
    }

    [Fact]
    public void Other_failures_pass_through_unchanged()
    {
        Assert.Throws<InvalidOperationException>(() => QuantizedModel.WithNativeAdvice<object>(() => throw new InvalidOperationException("bad model")));
        Assert.Throws<TypeInitializationException>(() =>
            QuantizedModel.WithNativeAdvice<object>(() => throw new TypeInitializationException("T", new InvalidOperationException())));
        Assert.Equal(3, QuantizedModel.WithNativeAdvice(() => 3));
    }
}
