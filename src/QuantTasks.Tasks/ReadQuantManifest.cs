using System;
using System.Collections.Generic;
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
                case "input" when fields.Length == 2:
                    inputs.Add(new TaskItem(fields[1]));
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

        Inputs = inputs.ToArray();
        Compile = compile.ToArray();
        Resources = resources.ToArray();
        Reports = reports.ToArray();
        return true;
    }
}
