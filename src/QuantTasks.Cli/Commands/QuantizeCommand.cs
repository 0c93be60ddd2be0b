using System.CommandLine;
using System.Globalization;
using QuantTasks.Caching;
using QuantTasks.Engine.Pipeline;
using QuantTasks.Policy;
using QuantTasks.Progress;
using QuantTasks.Reporting;
using Spectre.Console;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// <c>dotnet quant quantize [--policy FILE] [--out DIR] [--json]</c>: the whole pipeline for every model of the
/// policy: blob, generated C#, report.json and report.md. Exit code 2 when the accuracy gate fails (after the
/// outputs and the report are written).
/// </summary>
internal static class QuantizeCommand
{
    public static Command Create(CommandConsole console)
    {
        var policy = new Option<string>("--policy") { Description = "The policy file.", DefaultValueFactory = _ => PolicyLoader.DefaultFileName };
        var output = new Option<string?>("--out") { Description = "Output folder. Default: quant-out beside the policy." };
        var rootNamespace = new Option<string?>("--root-namespace") { Description = "The consuming project's root namespace; classes go in ROOT.Models. Default: from the policy's folder name." };
        var json = new Option<bool>("--json") { Description = "Write the report's JSON to standard output." };
        var cacheDirectory = new Option<string?>("--cache-dir") { Description = $"The content-hash cache. Default: ${ContentCache.DirectoryVariable}, else a per-user folder." };
        var noCache = new Option<bool>("--no-cache") { Description = "Neither read nor fill the cache (local or remote): compute every model." };
        var remote = RemoteCacheOptionSet.Create();
        var manifest = new Option<string?>("--manifest") { Description = "Also write the list of inputs and outputs the build integration reads (one 'kind<TAB>path' per line)." };
        var command = new Command("quantize", "Compress every model of the policy: blob, generated loader, report.")
        {
            policy,
            output,
            rootNamespace,
            json,
            cacheDirectory,
            noCache,
            manifest,
        };
        remote.AddTo(command);
        command.SetAction(parse =>
        {
            var loaded = PolicyLoader.Load(parse.GetRequiredValue(policy));
            var outDir = parse.GetValue(output) ?? Path.Combine(loaded.Folder, "quant-out");
            var root = parse.GetValue(rootNamespace) ?? NamespaceFromFolder(loaded.Folder);
            var local = parse.GetValue(noCache) ? null : new ContentCache(parse.GetValue(cacheDirectory) ?? ContentCache.DefaultRoot());
            using var server = local is null ? null : remote.Open(parse);
            ResultCache? cache = server is null ? local : new TieredCache(local!, server);
            var options = new PipelineOptions(outDir, root, cache);
            PipelineResult result;
            try
            {
                result = console.Human.Profile.Capabilities.Interactive && !parse.GetValue(json)
                    ? WithProgressBar(console, loaded, options)
                    : new QuantizationPipeline(StageNotes(console), console.Note).Run(loaded, options, console.Cancellation);
            }
            finally
            {
                if (server is not null)
                {
                    RemoteCacheOptionSet.Record(console, local!, server);
                }
            }

            if (parse.GetValue(manifest) is { } manifestPath)
            {
                BuildManifest.Write(manifestPath, loaded, result, outDir);
            }

            if (parse.GetValue(json))
            {
                console.WriteLine(result.Report.ToJson());
            }
            else
            {
                Render(console.Human, result.Report, outDir);
            }

            result.ThrowIfGateFailed();
            return 0;
        });
        return command;
    }

    /// <summary>Without a terminal, one line per stage (not per probe or tensor).</summary>
    private static SynchronousProgress<PipelineProgress> StageNotes(CommandConsole console)
    {
        var last = "";
        var gate = new object();
        return new SynchronousProgress<PipelineProgress>(p =>
        {
            lock (gate)
            {
                var line = $"{p.Model}: {p.Stage}";
                if (line != last)
                {
                    last = line;
                    console.Note(line);
                }
            }
        });
    }

    private static PipelineResult WithProgressBar(CommandConsole console, LoadedPolicy loaded, PipelineOptions options)
    {
        PipelineResult? result = null;
        console.Human.Progress().Start(context =>
        {
            var tasks = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
            var gate = new object();

            // The search reports from several threads.
            var pipeline = new QuantizationPipeline(new SynchronousProgress<PipelineProgress>(p =>
            {
                lock (gate)
                {
                    if (!tasks.TryGetValue(p.Model, out var task))
                    {
                        tasks[p.Model] = task = context.AddTask(p.Model, maxValue: 1);
                    }

                    task.Description = $"{p.Model}: {p.Stage}";
                    task.Value = Math.Max(task.Value, p.Fraction);
                }
            }), console.Note);
            result = pipeline.Run(loaded, options, console.Cancellation);
        });
        return result!;
    }

    private static void Render(IAnsiConsole output, QuantizationReport report, string outDir)
    {
        foreach (var model in report.Models)
        {
            var origin = model.CacheHit ? " (from the cache)" : "";
            output.MarkupLineInterpolated($"[bold]{model.Name}[/]: {model.OriginalBytes:N0} B of float32 weights -> {model.CompressedBytes:N0} B ([bold]{model.CompressionRatio:0.0}x[/], {model.AverageBits:0.00} bits/weight){origin}");
            if (model.Accuracy is { } a)
            {
                var verdict = a.Passed ? "[green]passed[/]" : "[red]FAILED[/]";
                output.MarkupLine(string.Create(CultureInfo.InvariantCulture,
                    $"accuracy ({a.Metric}, {a.Samples} samples): float {a.Baseline:0.00}%, quantized {a.Quantized:0.00}%, drop {a.Drop:0.00} pp, limit {a.MaxDrop:0.00} pp: {verdict}"));
            }

            var table = new Table().Border(TableBorder.Rounded).AddColumn("Tensor")
                .AddColumn(new TableColumn("Params").RightAligned())
                .AddColumn(new TableColumn("Bits").RightAligned())
                .AddColumn("Method")
                .AddColumn(new TableColumn("Sparsity").RightAligned())
                .AddColumn(new TableColumn("Sensitivity").RightAligned())
                .AddColumn(new TableColumn("Bytes").RightAligned());
            foreach (var t in model.Tensors)
            {
                table.AddRow(
                    Markup.Escape(t.Name),
                    t.Params.ToString("N0", CultureInfo.InvariantCulture),
                    t.Bits.ToString(CultureInfo.InvariantCulture),
                    t.Grid is null ? t.Method : $"{t.Method}, {t.Grid}",
                    t.Sparsity.ToString("P1", CultureInfo.InvariantCulture),
                    t.Sensitivity.ToString("G3", CultureInfo.InvariantCulture),
                    t.Bytes.ToString("N0", CultureInfo.InvariantCulture));
            }

            output.Write(table);
        }

        output.MarkupLineInterpolated($"Wrote blobs, generated code and report.json/report.md to {outDir}");
    }

    /// <summary>A namespace from a folder name: <c>sample-project</c> gives <c>SampleProject</c>.</summary>
    internal static string NamespaceFromFolder(string folder)
    {
        var words = Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)).Split(['-', '_', '.', ' '], StringSplitOptions.RemoveEmptyEntries);
        var name = new string(string.Concat(words.Select(w => char.ToUpperInvariant(w[0]) + w[1..])).Where(char.IsLetterOrDigit).ToArray());
        return name.Length == 0 || char.IsDigit(name[0]) ? "App" + name : name;
    }
}
