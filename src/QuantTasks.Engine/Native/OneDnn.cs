using System.Runtime.InteropServices;

namespace QuantTasks.Engine.Native;

/// <summary>
/// Turns off libtorch's oneDNN (MKLDNN) CPU kernels for the process, so convolutions run on libtorch's own
/// kernels. In float32, oneDNN's convolution backward pass gives wrong input gradients for some shapes: a 4 x 4
/// kernel at stride 2 on an 8 x 8 input gave NaN in PyTorch 2.6 itself, and a Hessian-vector product 8% off its
/// finite differences in libtorch 2.10 (float64 and the native kernels agree to 1e-4; see the operator tests).
/// libtorch picks oneDNN for any batch of more than one sample or kernel above 3 x 3, so every analysis and
/// fine-tuning step met it; its uninitialised memory is the likeliest source of the transient NaN gradients
/// <see cref="TransientNaN"/> retries.
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

    /// <summary>Whether oneDNN is off now; false when the loaded libtorch does not export the setting.</summary>
    public static bool Disable()
    {
        foreach (var (library, context, set, get) in Exports)
        {
            // libtorch is already loaded by now: this finds the loaded copy by its name.
            if (!NativeLibrary.TryLoad(library, out var handle)
                || !NativeLibrary.TryGetExport(handle, context, out var contextExport)
                || !NativeLibrary.TryGetExport(handle, set, out var setExport)
                || !NativeLibrary.TryGetExport(handle, get, out var getExport))
            {
                continue;
            }

            var instance = Marshal.GetDelegateForFunctionPointer<GlobalContext>(contextExport)();
            Marshal.GetDelegateForFunctionPointer<SetEnabled>(setExport)(instance, false);
            return !Marshal.GetDelegateForFunctionPointer<GetEnabled>(getExport)(instance);
        }

        return false;
    }

    /// <summary>Whether oneDNN is on (for tests); null when the setting cannot be read.</summary>
    public static bool? Enabled()
    {
        foreach (var (library, context, _, get) in Exports)
        {
            if (NativeLibrary.TryLoad(library, out var handle)
                && NativeLibrary.TryGetExport(handle, context, out var contextExport)
                && NativeLibrary.TryGetExport(handle, get, out var getExport))
            {
                return Marshal.GetDelegateForFunctionPointer<GetEnabled>(getExport)(Marshal.GetDelegateForFunctionPointer<GlobalContext>(contextExport)());
            }
        }

        return null;
    }
}
