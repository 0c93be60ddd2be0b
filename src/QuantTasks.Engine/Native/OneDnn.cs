using System.Runtime.InteropServices;

namespace QuantTasks.Engine.Native;

/// <summary>
/// Chooses between libtorch's oneDNN (MKLDNN) CPU convolution kernels and its own, per compiled graph. In float32,
/// oneDNN's convolution backward pass gives wrong input gradients for some shapes: a 4 x 4 kernel at stride 2 on
/// an 8 x 8 input gave NaN in PyTorch 2.6 itself, and a Hessian-vector product 8% off its finite differences in
/// libtorch 2.10 (float64 and the native kernels agree to 1e-4; see the operator tests); 3 x 3 and 5 x 5 kernels
/// at stride 1 were right. A graph with a strided convolution or an even kernel runs on libtorch's own kernels;
/// others keep oneDNN, whose results earlier runs recorded (and which differ in their low bits). Its uninitialised
/// memory is also the likeliest source of the transient NaN gradients <see cref="TransientNaN"/> retries.
/// </summary>
/// <remarks>
/// TorchSharp has no setter for it, so this calls libtorch's <c>at::globalContext().setUserEnabledMkldnn(false)</c>
/// by its exported (mangled) name: the Itanium name on Linux and macOS, the MSVC name on Windows.
/// </remarks>
internal static class OneDnn
{
    private static readonly (string Library, string Context, string Set, string Get)[] Exports =
    [
        ("libtorch_cpu.so", "_ZN2at13globalContextEv", "_ZN2at7Context20setUserEnabledMkldnnEb", "_ZNK2at7Context17userEnabledMkldnnEv"),
        ("libtorch_cpu.dylib", "_ZN2at13globalContextEv", "_ZN2at7Context20setUserEnabledMkldnnEb", "_ZNK2at7Context17userEnabledMkldnnEv"),
        ("torch_cpu.dll", "?globalContext@at@@YAAEAVContext@1@XZ", "?setUserEnabledMkldnn@Context@at@@QEAAX_N@Z", "?userEnabledMkldnn@Context@at@@QEBA_NXZ"),
    ];

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate IntPtr GlobalContext();

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetEnabled(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    [return: MarshalAs(UnmanagedType.U1)]
    private delegate bool GetEnabled(IntPtr context);

    // One choice at a time in the process: a graph holds it from compilation to disposal (re-entrant, so an
    // analysis inside a fine-tuning run on the same thread nests), and the next graph waits.
    private static readonly object s_gate = new();

    /// <summary>
    /// Takes the process's kernel choice for one graph: oneDNN off when <paramref name="native"/>, on otherwise,
    /// until the returned object is disposed (on the same thread), which restores the choice before it.
    /// </summary>
    public static IDisposable Choose(bool native)
    {
        Monitor.Enter(s_gate);
        var previous = Enabled();
        Set(!native);
        return new Choice(previous);
    }

    private sealed class Choice(bool? previous) : IDisposable
    {
        private bool _released;

        public void Dispose()
        {
            if (_released)
            {
                return;
            }

            _released = true;
            if (previous is { } enabled)
            {
                Set(enabled);
            }

            Monitor.Exit(s_gate);
        }
    }

    // libtorch's context and its oneDNN accessors, looked up once (libtorch is loaded before any graph); null
    // when the loaded libtorch exports none of the names.
    private static readonly Lazy<(IntPtr Context, SetEnabled Set, GetEnabled Get)?> s_exports = new(Resolve);

    private static (IntPtr Context, SetEnabled Set, GetEnabled Get)? Resolve()
    {
        foreach (var (library, context, set, get) in Exports)
        {
            // This finds the already loaded copy by its name.
            if (NativeLibrary.TryLoad(library, out var handle)
                && NativeLibrary.TryGetExport(handle, context, out var contextExport)
                && NativeLibrary.TryGetExport(handle, set, out var setExport)
                && NativeLibrary.TryGetExport(handle, get, out var getExport))
            {
                return (Marshal.GetDelegateForFunctionPointer<GlobalContext>(contextExport)(),
                    Marshal.GetDelegateForFunctionPointer<SetEnabled>(setExport),
                    Marshal.GetDelegateForFunctionPointer<GetEnabled>(getExport));
            }
        }

        return null;
    }

    /// <summary>Sets oneDNN on or off, where the loaded libtorch exports the setting.</summary>
    private static void Set(bool enabled)
    {
        if (s_exports.Value is { } exports)
        {
            exports.Set(exports.Context, enabled);
        }
    }

    /// <summary>Whether oneDNN is on; null when the setting cannot be read.</summary>
    public static bool? Enabled() => s_exports.Value is { } exports ? exports.Get(exports.Context) : null;
}
