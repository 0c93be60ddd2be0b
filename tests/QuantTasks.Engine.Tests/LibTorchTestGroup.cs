namespace QuantTasks.Engine.Tests;

/// <summary>
/// The test classes that run libtorch graphs. The engine lets one compiled graph at a time hold the process's
/// kernel choice (<c>OneDnn.Choose</c>), so two such classes run side by side only to have one wait for the other:
/// with xunit's two threads on two cores a waiting class idled a core for minutes (a test that takes 0.4 s alone
/// was reported at 181 s). In one collection they run one after another, and the second thread runs the classes
/// that need no libtorch meanwhile.
/// </summary>
[CollectionDefinition(Name)]
public sealed class LibTorchTestGroup
{
    /// <summary>The collection's name.</summary>
    public const string Name = "libtorch";
}
