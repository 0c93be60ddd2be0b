using System.Runtime.InteropServices;
using QuantTasks.Engine.Native;

namespace QuantTasks.Engine.Tests.Native;

/// <summary>Alone: the pipelines of other tests trim the same heap and would take the freed pages first.</summary>
[CollectionDefinition(nameof(NativeHeapTests), DisableParallelization = true)]
public sealed class NativeHeapTestsRunAlone;

[Collection(nameof(NativeHeapTests))]
public class NativeHeapTests
{
    /// <summary>
    /// 200 MB of small malloc blocks freed below one that stays (so free() cannot give them back by lowering the
    /// heap's top): glibc keeps them resident until the pipeline's trim between stages returns them.
    /// </summary>
    [Fact]
    public void Freed_C_heap_pages_go_back_to_the_system_on_glibc()
    {
        if (!OperatingSystem.IsLinux() || !NativeLibrary.TryLoad("libc.so.6", out _))
        {
            NativeHeap.ReturnFreePages(); // elsewhere nothing to call, and nothing may throw
            return;
        }

        const int block = 64 * 1024, count = 3200;
        var ones = Enumerable.Repeat((byte)1, block).ToArray();
        var blocks = new IntPtr[count];
        for (var i = 0; i < count; i++)
        {
            blocks[i] = Marshal.AllocHGlobal(block);
            Marshal.Copy(ones, 0, blocks[i], block);
        }

        for (var i = 0; i < count - 1; i++)
        {
            Marshal.FreeHGlobal(blocks[i]);
        }

        var held = Resident();
        NativeHeap.ReturnFreePages();
        var returned = held - Resident();
        Marshal.FreeHGlobal(blocks[count - 1]);
        Assert.True(returned > 100L << 20, $"{returned >> 20} MB of about 200 MB freed went back to the system");
    }

    // Resident pages of this process, from the kernel's own count.
    private static long Resident() =>
        long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture) * Environment.SystemPageSize;
}
