using System;
using System.IO;
using System.Reflection;
using Microsoft.ML.OnnxRuntime;

namespace QuantTasks.Runtime;

/// <summary>
/// Creates ONNX Runtime sessions from QuantTasks blobs. The generated <c>XxxModel.CreateSession</c> methods call
/// these; apps rarely need to.
/// </summary>
public static class QuantizedModel
{
    /// <summary>Decodes a blob held in memory and creates a session for it.</summary>
    /// <param name="blob">The blob's bytes.</param>
    /// <param name="options">Session options (execution providers, threads); null for ONNX Runtime's defaults. They are not modified.</param>
    /// <exception cref="QuantBlobException">The blob is not a QuantTasks blob, is truncated, corrupt, or of a newer format.</exception>
    public static InferenceSession CreateSession(byte[] blob, SessionOptions? options = null) =>
        CreateSession(QuantBlob.Read(blob), options);

    /// <summary>Reads a blob from a stream, decodes it and creates a session for it.</summary>
    /// <exception cref="QuantBlobException">The blob is not a QuantTasks blob, is truncated, corrupt, or of a newer format.</exception>
    public static InferenceSession CreateSession(Stream blob, SessionOptions? options = null) =>
        CreateSession(QuantBlob.Read(blob), options);

    /// <summary>Reads a blob embedded in an assembly as a manifest resource and creates a session for it.</summary>
    /// <exception cref="QuantBlobException">The resource does not exist, or the blob is invalid.</exception>
    public static InferenceSession CreateSession(Assembly assembly, string resourceName, SessionOptions? options = null)
    {
        if (assembly is null)
        {
            throw new ArgumentNullException(nameof(assembly));
        }

        using var stream = assembly.GetManifestResourceStream(resourceName)
            ?? throw new QuantBlobException($"Assembly {assembly.GetName().Name} has no embedded resource '{resourceName}'. Build the project again so that QuantTasks embeds the blob.");
        return CreateSession(stream, options);
    }

    /// <summary>
    /// Creates a session from the blob embedded in <paramref name="assembly"/> as <paramref name="resourceName"/>,
    /// or, when the build copied it instead, from <paramref name="fileName"/> in the application's folder.
    /// </summary>
    /// <exception cref="QuantBlobException">Neither exists, or the blob is invalid.</exception>
    public static InferenceSession CreateSession(Assembly assembly, string resourceName, string fileName, SessionOptions? options = null)
    {
        if (assembly is null)
        {
            throw new ArgumentNullException(nameof(assembly));
        }

        using (var stream = assembly.GetManifestResourceStream(resourceName))
        {
            if (stream is not null)
            {
                return CreateSession(stream, options);
            }
        }

        var path = Path.Combine(AppContext.BaseDirectory, fileName);
        if (!File.Exists(path))
        {
            throw new QuantBlobException($"The compressed model is neither embedded in {assembly.GetName().Name} as '{resourceName}' nor at {path}. Build the project again so that QuantTasks produces it.");
        }

        return CreateSession(File.ReadAllBytes(path), options);
    }

    /// <summary>Creates a session for an already verified blob.</summary>
    /// <exception cref="QuantBlobException">A coded stream in the blob is corrupt.</exception>
    /// <exception cref="OnnxRuntimeNotFoundException">The application has no ONNX Runtime native package.</exception>
    public static InferenceSession CreateSession(QuantBlob blob, SessionOptions? options = null)
    {
        if (blob is null)
        {
            throw new ArgumentNullException(nameof(blob));
        }

        // The weights go in as initializers of the model bytes, which ONNX Runtime copies while it loads: the
        // session owns everything it needs, and the caller's options stay untouched and reusable.
        var model = blob.DecodeOnnxModel();
        return WithNativeAdvice(() => options is null ? new InferenceSession(model) : new InferenceSession(model, options));
    }

    /// <summary>
    /// Runs <paramref name="create"/>, turning the failure to load ONNX Runtime's native library (a
    /// <see cref="DllNotFoundException"/>, possibly inside the <see cref="TypeInitializationException"/> of ONNX
    /// Runtime's native methods) into an <see cref="OnnxRuntimeNotFoundException"/> that names the package to add.
    /// </summary>
    internal static T WithNativeAdvice<T>(Func<T> create)
    {
        try
        {
            return create();
        }
        catch (Exception e) when (e is not OnnxRuntimeNotFoundException && IsMissingNativeLibrary(e))
        {
            throw new OnnxRuntimeNotFoundException(OnnxRuntimeNotFoundException.Advice, e);
        }
    }

    private static bool IsMissingNativeLibrary(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is DllNotFoundException)
            {
                return true;
            }

            if (e is not TypeInitializationException)
            {
                return false;
            }
        }

        return false;
    }
}
