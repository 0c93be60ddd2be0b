using System.Runtime.InteropServices;

namespace QuantTasks.Engine.Native;

/// <summary>
/// Gives the C heap's free pages back to the system between stages. ONNX Runtime allocates a run's activations
/// with malloc; glibc keeps what a closed session freed in its arenas (a freed large block also raises its
/// threshold for using mmap, so the next ones come from the arenas too), and the process's resident memory only
/// grows: ResNet-18 kept 140 MB after its activations stage. Only glibc has malloc_trim; elsewhere (Windows,
/// macOS, musl) this does nothing.
/// </summary>
internal static class NativeHeap
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int MallocTrim(nuint pad);

    private static readonly Lazy<MallocTrim?> Trim = new(Find);

    /// <summary>Returns the C heap's free pages to the system, where the C library can.</summary>
    public static void ReturnFreePages() => Trim.Value?.Invoke(0);

    private static MallocTrim? Find() =>
        OperatingSystem.IsLinux() && NativeLibrary.TryLoad("libc.so.6", out var libc) && NativeLibrary.TryGetExport(libc, "malloc_trim", out var address)
            ? Marshal.GetDelegateForFunctionPointer<MallocTrim>(address)
            : null;
}
