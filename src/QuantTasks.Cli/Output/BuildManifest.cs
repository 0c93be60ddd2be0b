using System.Globalization;
using QuantTasks.CodeGeneration;
using QuantTasks.Engine.Pipeline;
using QuantTasks.Policy;

namespace QuantTasks.Cli;

/// <summary>
/// The file <c>quantize --manifest</c> writes for the MSBuild integration: what the run read (so that the next
/// build knows which files to watch) and what it wrote (so that the build compiles the loaders and embeds the
/// blobs). One record per line, fields separated by tabs, absolute paths:
/// <c>input PATH SIZE MTIME</c>, <c>compile PATH</c>, <c>resource PATH LOGICAL-NAME</c>, <c>report PATH</c>.
/// An input's size and last-write time (UTC ticks) let the build notice a file replaced by an older one, which
/// MSBuild's timestamp comparison alone would miss.
/// A line-oriented format because the reader is a netstandard2.0 task with no JSON library.
/// </summary>
internal static class BuildManifest
{
    public static void Write(string path, LoadedPolicy loaded, PipelineResult result, string outputDirectory)
    {
        var inputs = new[] { Path.GetFullPath(loaded.Path) }.Concat(result.Models.SelectMany(m => m.Inputs)).Distinct(StringComparer.Ordinal);
        var lines = inputs.Select(Input).ToList();
        foreach (var model in result.Models)
        {
            lines.Add(Line("compile", Path.GetFullPath(model.CodePath)));
            lines.Add(Line("resource", Path.GetFullPath(model.BlobPath), LoaderGenerator.ResourceName(model.Namespace, model.Report.Name)));
        }

        var folder = Path.GetFullPath(outputDirectory);
        lines.AddRange(QuantizationPipeline.ReportFiles.Select(f => Line("report", Path.Combine(folder, f))));
        AtomicFile.WriteAllText(path, string.Join('\n', lines) + "\n");
    }

    private static string Input(string path)
    {
        var file = new FileInfo(path);
        return Line("input", path, file.Length.ToString(CultureInfo.InvariantCulture), file.LastWriteTimeUtc.Ticks.ToString(CultureInfo.InvariantCulture));
    }

    private static string Line(params string[] fields) => string.Join('\t', fields);
}
