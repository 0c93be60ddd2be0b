using System.CommandLine;
using System.Globalization;
using QuantTasks.Caching;
using Spectre.Console;

namespace QuantTasks.Cli.Commands;

/// <summary><c>dotnet quant cache list|clear [--cache-dir DIR]</c>: the content-hash cache that builds share.</summary>
internal static class CacheCommand
{
    public static Command Create(CommandConsole console)
    {
        var command = new Command("cache", "The content-hash cache of compressed models that builds share.");
        command.Add(List(console));
        command.Add(Clear(console));
        return command;
    }

    private static Option<string?> CacheDirectory() =>
        new("--cache-dir") { Description = $"The cache folder. Default: ${ContentCache.DirectoryVariable}, else a per-user folder." };

    private static Command List(CommandConsole console)
    {
        var folder = CacheDirectory();
        var json = new Option<bool>("--json") { Description = "Write {\"root\", \"entries\": [{\"key\", \"model\", \"created\", \"bytes\", \"valid\"}]} to standard output." };
        var command = new Command("list", "Every cached result: content hash, model, when, size, and whether its checksums hold.") { folder, json };
        command.SetAction(parse =>
        {
            var cache = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            var entries = cache.List();
            if (parse.GetValue(json))
            {
                console.WriteJson(new { root = cache.Root, entries });
                return 0;
            }

            if (entries.Count == 0)
            {
                console.Human.WriteLine($"The cache at {cache.Root} is empty.");
                return 0;
            }

            var table = new Table().Border(TableBorder.Rounded).AddColumn("Key").AddColumn("Model").AddColumn("Created (UTC)")
                .AddColumn(new TableColumn("Bytes").RightAligned()).AddColumn("Valid");
            foreach (var e in entries)
            {
                table.AddRow(
                    e.Key[..16],
                    Markup.Escape(e.Model),
                    e.Created.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
                    e.Bytes.ToString("N0", CultureInfo.InvariantCulture),
                    e.Valid ? "yes" : "[red]no[/]");
            }

            console.Human.Write(table);
            console.Human.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{entries.Count} entries, {entries.Sum(e => e.Bytes):N0} bytes, in {cache.Root}"));
            return 0;
        });
        return command;
    }

    private static Command Clear(CommandConsole console)
    {
        var folder = CacheDirectory();
        var command = new Command("clear", "Remove every cached result; the next build compresses its models again.") { folder };
        command.SetAction(parse =>
        {
            var cache = new ContentCache(parse.GetValue(folder) ?? ContentCache.DefaultRoot());
            var removed = cache.Clear();
            console.Human.WriteLine($"Removed {removed} entries from {cache.Root}.");
            return 0;
        });
        return command;
    }
}
