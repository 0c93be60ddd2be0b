using System.Runtime.CompilerServices;
using QuantTasks.Caching;

namespace QuantTasks.Cli.Tests;

/// <summary>Keeps the tests' quantize runs out of the user's content-hash cache.</summary>
internal static class TestEnvironment
{
#pragma warning disable CA2255 // A test assembly is the one place where a module initializer is the right hook.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void UseAPrivateCache() =>
        Environment.SetEnvironmentVariable(ContentCache.DirectoryVariable,
            Path.Combine(Path.GetTempPath(), "quanttasks-tests", $"cache-{Environment.ProcessId}"));
}
