namespace QuantTasks.Tests;

/// <summary>The committed fixtures (see tests/fixtures/generator/README.md), copied beside the test assembly.</summary>
internal static class Fixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "fixtures");

    public static string Model(string name) => Path.Combine(Root, "models", name);

    public static string Data(string name) => Path.Combine(Root, "data", name);
}

/// <summary>A folder under the system's temporary folder, deleted when the test ends.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "quanttasks-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Copies a file into the folder and returns its new path.</summary>
    public string Copy(string source, string? name = null)
    {
        var target = File(name ?? System.IO.Path.GetFileName(source));
        System.IO.File.Copy(source, target, overwrite: true);
        return target;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A file still open on a slow file system; the OS cleans the temporary folder.
        }
    }
}
