using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace QuantTasks.Build;

/// <summary>
/// Reads the manifest the engine wrote on its last run: the files it read (what the next build must watch) and
/// the files it wrote (loaders to compile, blobs to embed, reports). Runs on every build, including the ones
/// that skip the engine because nothing changed, so the outputs are always part of the compilation.
/// </summary>
public sealed class ReadQuantManifest : Microsoft.Build.Utilities.Task
{
    /// <summary>The manifest; a missing file gives empty outputs.</summary>
    [Required]
    public string ManifestPath { get; set; } = "";

    /// <summary>
    /// The stamp of the engine's last successful run. Removed when an input's size or last-write time differs
    /// from what the engine saw, so that a file replaced by an older one (a copy that kept its timestamp) still
    /// runs the engine again.
    /// </summary>
    public string StampPath { get; set; } = "";

    /// <summary>Files the engine read: the policy, models, external data, data files.</summary>
    [Output]
    public ITaskItem[] Inputs { get; private set; } = [];

    /// <summary>Generated C# loaders.</summary>
    [Output]
    public ITaskItem[] Compile { get; private set; } = [];

    /// <summary>Blobs, with the <c>LogicalName</c> the generated loader looks them up by.</summary>
    [Output]
    public ITaskItem[] Resources { get; private set; } = [];

    /// <summary>report.json, report.md and report.svg.</summary>
    [Output]
    public ITaskItem[] Reports { get; private set; } = [];

    private static bool Changed(string path, string size, string ticks)
    {
        var file = new FileInfo(path);
        return !file.Exists
            || file.Length.ToString(CultureInfo.InvariantCulture) != size
            || file.LastWriteTimeUtc.Ticks.ToString(CultureInfo.InvariantCulture) != ticks;
    }

    /// <inheritdoc />
    public override bool Execute()
    {
        if (!File.Exists(ManifestPath))
        {
            return true;
        }

        var inputs = new List<ITaskItem>();
        var compile = new List<ITaskItem>();
        var resources = new List<ITaskItem>();
        var reports = new List<ITaskItem>();
        var number = 0;
        string? changed = null;
        foreach (var line in File.ReadAllLines(ManifestPath))
        {
            number++;
            if (line.Length == 0)
            {
                continue;
            }

            var fields = line.Split('\t');
            switch (fields[0])
            {
                case "input" when fields.Length is 2 or 4:
                    inputs.Add(new TaskItem(fields[1]));
                    if (fields.Length == 4 && Changed(fields[1], fields[2], fields[3]))
                    {
                        changed = fields[1];
                    }

                    break;
                case "compile" when fields.Length == 2:
                    compile.Add(new TaskItem(fields[1]));
                    break;
                case "resource" when fields.Length == 3:
                    var resource = new TaskItem(fields[1]);
                    resource.SetMetadata("LogicalName", fields[2]);
                    resources.Add(resource);
                    break;
                case "report" when fields.Length == 2:
                    reports.Add(new TaskItem(fields[1]));
                    break;
                default:
                    // Written by an engine of another version: the next engine run writes it again.
                    Log.LogWarning(null, "QT3003", null, ManifestPath, number, 0, 0, 0,
                        "Unrecognised line in the QuantTasks manifest; the engine will run again.");
                    File.Delete(ManifestPath);
                    return true;
            }
        }

        if (changed is not null && StampPath.Length > 0 && File.Exists(StampPath))
        {
            Log.LogMessage(MessageImportance.Normal, "QuantTasks: {0} is not the file the engine last read; it runs again.", changed);
            File.Delete(StampPath);
        }

        Inputs = inputs.ToArray();
        Compile = compile.ToArray();
        Resources = resources.ToArray();
        Reports = reports.ToArray();
        return true;
    }
}
