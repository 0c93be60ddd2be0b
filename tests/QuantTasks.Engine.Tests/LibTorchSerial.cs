namespace QuantTasks.Engine.Tests;

/// <summary>
/// Test classes that drive libtorch hard from one process (fine-tuning loops, the PP-OCR analysis) run one after
/// another: with them in parallel, the recognizer's power iteration gave NaN in some CI runs, which no run of
/// either alone has shown. The cause is not found yet (see the issue 14 note); this keeps them apart meanwhile.
/// </summary>
[CollectionDefinition(Name)]
public sealed class LibTorchSerial
{
    public const string Name = "libtorch, one at a time";
}
