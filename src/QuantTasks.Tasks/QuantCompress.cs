using System;
using System.IO;
using System.Text.RegularExpressions;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace QuantTasks.Build;

/// <summary>
/// Runs <c>dotnet-quant quantize</c> for a project's policy, out of process, and reports its QTnnnn diagnostics
/// as MSBuild errors. The engine prints errors in MSBuild's canonical form (<c>file(line,col): error QT1102: ...</c>),
/// so <see cref="ToolTask"/>'s own parsing turns them into errors with file and line; every other line it prints
/// (one per stage, and its notes) becomes a message, whatever its wording.
/// </summary>
public sealed class QuantCompress : ToolTask
{
    /// <summary>The policy file (<c>quant.yaml</c>).</summary>
    [Required]
    public string PolicyPath { get; set; } = "";

    /// <summary>Where blobs, loaders and reports go (under <c>$(IntermediateOutputPath)</c>).</summary>
    [Required]
    public string OutputDirectory { get; set; } = "";

    /// <summary>The list of inputs and outputs the engine writes for <see cref="ReadQuantManifest"/>.</summary>
    [Required]
    public string ManifestPath { get; set; } = "";

    /// <summary>The folder holding <c>dotnet-quant.dll</c> with its deps.json and runtimeconfig.json.</summary>
    [Required]
    public string EngineDirectory { get; set; } = "";

    /// <summary>Generated classes go in <c>{RootNamespace}.Models</c> unless the policy names a namespace.</summary>
    public string RootNamespace { get; set; } = "";

    /// <summary>The content-hash cache folder; empty for the engine's per-user default.</summary>
    public string CacheDirectory { get; set; } = "";

    /// <summary>False to compute every model without reading or filling the cache.</summary>
    public bool UseCache { get; set; } = true;

    /// <summary>A remote cache's base URL; empty for <c>QUANTTASKS_CACHE_URL</c> or none. Its token comes only from the environment.</summary>
    public string CacheUrl { get; set; } = "";

    /// <summary>False to read the remote cache without uploading (pull-request builds).</summary>
    public bool CacheRemoteWrite { get; set; } = true;

    /// <summary>Seconds one remote request may take; empty for the engine's default.</summary>
    public string CacheTimeout { get; set; } = "";

    /// <summary>
    /// The NuGet global packages folder. The engine's third-party assemblies and native libraries are resolved
    /// from it by the .NET host; with <see cref="RestoreEngineDependencies"/> they are restored into it first.
    /// </summary>
    public string PackageRoot { get; set; } = "";

    /// <summary>Restore the packages the engine's deps.json names, when some are missing from <see cref="PackageRoot"/>.</summary>
    public bool RestoreEngineDependencies { get; set; }

    /// <summary>A scratch folder for the engine's dependency restore.</summary>
    public string IntermediateDirectory { get; set; } = "";

    /// <summary>The <c>dotnet</c> host; empty for the one running this build.</summary>
    public string DotNetHostPath { get; set; } = "";

    /// <inheritdoc />
    protected override string ToolName => "dotnet";

    private string EngineAssembly => Path.Combine(EngineDirectory, "dotnet-quant.dll");

    /// <inheritdoc />
    public override bool Execute()
    {
        if (!File.Exists(EngineAssembly))
        {
            Log.LogError(null, "QT3002", null, PolicyPath, 0, 0, 0, 0,
                "The QuantTasks engine is missing: {0} does not exist. Restore the QuantTasks package again, or set QuantEngineDirectory.", EngineAssembly);
            return false;
        }

        if (RestoreEngineDependencies && !string.IsNullOrEmpty(PackageRoot))
        {
            var restore = new EngineDependencies(Path.Combine(EngineDirectory, "dotnet-quant.deps.json"), PackageRoot, Log);
            if (!restore.Ensure(GenerateFullPathToTool(), string.IsNullOrEmpty(IntermediateDirectory) ? OutputDirectory : IntermediateDirectory))
            {
                return false;
            }
        }

        return base.Execute();
    }

    /// <summary>
    /// Checks what the targets pass before the engine starts, so that a mistyped property is reported as what it
    /// is rather than as whatever the engine makes of it.
    /// </summary>
    protected override bool ValidateParameters()
    {
        var valid = true;
        void Error(string code, string message, params object[] args)
        {
            Log.LogError(null, code, null, PolicyPath, 0, 0, 0, 0, message, args);
            valid = false;
        }

        if (!File.Exists(PolicyPath))
        {
            Error("QT1002", "The policy {0} does not exist. Set QuantPolicy to the quant.yaml of this project, or run 'dotnet quant init'.", PolicyPath);
        }

        if (string.IsNullOrWhiteSpace(OutputDirectory) || File.Exists(OutputDirectory.TrimEnd('/', '\\')))
        {
            Error("QT1004", "The engine's output folder '{0}' is empty or a file; it is set from IntermediateOutputPath.", OutputDirectory);
        }

        if (string.IsNullOrWhiteSpace(ManifestPath) || Directory.Exists(ManifestPath))
        {
            Error("QT1004", "The engine's manifest path '{0}' is empty or a folder.", ManifestPath);
        }

        if (!string.IsNullOrEmpty(CacheUrl) && !(Uri.TryCreate(CacheUrl, UriKind.Absolute, out var url) && (url.Scheme == "http" || url.Scheme == "https") && url.UserInfo.Length == 0))
        {
            Error("QT1001", "QuantCacheUrl must be an absolute http:// or https:// URL without credentials (a token goes in QUANTTASKS_CACHE_TOKEN).");
        }

        if (!string.IsNullOrEmpty(CacheTimeout) && !(double.TryParse(CacheTimeout, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds > 0 && seconds <= 3600))
        {
            Error("QT1001", "QuantCacheTimeout '{0}' is not a number of seconds from above 0 to 3600.", CacheTimeout);
        }

        if (!string.IsNullOrEmpty(CacheDirectory) && File.Exists(CacheDirectory.TrimEnd('/', '\\')))
        {
            Error("QT1004", "QuantCacheDirectory '{0}' is a file, not a folder.", CacheDirectory);
        }

        return valid && base.ValidateParameters();
    }

    /// <inheritdoc />
    protected override string GenerateFullPathToTool()
    {
        if (!string.IsNullOrEmpty(DotNetHostPath))
        {
            return DotNetHostPath;
        }

        // Set by the dotnet CLI for the MSBuild it runs; the same host runs the engine.
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        return string.IsNullOrEmpty(host) ? "dotnet" : host!;
    }

    /// <inheritdoc />
    protected override string GenerateCommandLineCommands()
    {
        var args = new CommandLineBuilder();
        args.AppendSwitch("exec");
        args.AppendSwitchIfNotNull("--runtimeconfig ", Path.Combine(EngineDirectory, "dotnet-quant.runtimeconfig.json"));
        args.AppendSwitchIfNotNull("--depsfile ", Path.Combine(EngineDirectory, "dotnet-quant.deps.json"));
        if (!string.IsNullOrEmpty(PackageRoot))
        {
            args.AppendSwitchIfNotNull("--additionalprobingpath ", PackageRoot.TrimEnd('/', '\\'));
        }

        args.AppendFileNameIfNotNull(EngineAssembly);
        args.AppendSwitch("quantize");
        args.AppendSwitchIfNotNull("--policy ", PolicyPath);
        args.AppendSwitchIfNotNull("--out ", OutputDirectory.TrimEnd('/', '\\'));
        args.AppendSwitchIfNotNull("--manifest ", ManifestPath);
        if (!string.IsNullOrEmpty(RootNamespace))
        {
            args.AppendSwitchIfNotNull("--root-namespace ", RootNamespace);
        }

        if (!UseCache)
        {
            args.AppendSwitch("--no-cache");
        }
        else
        {
            if (!string.IsNullOrEmpty(CacheDirectory))
            {
                args.AppendSwitchIfNotNull("--cache-dir ", CacheDirectory.TrimEnd('/', '\\'));
            }

            // The URL only: the token stays in the environment the engine inherits, off every command line and log.
            if (!string.IsNullOrEmpty(CacheUrl))
            {
                args.AppendSwitchIfNotNull("--cache-url ", CacheUrl);
            }

            if (!CacheRemoteWrite)
            {
                args.AppendSwitch("--cache-read-only");
            }

            if (!string.IsNullOrEmpty(CacheTimeout))
            {
                args.AppendSwitchIfNotNull("--cache-timeout ", CacheTimeout);
            }
        }

        return args.ToString();
    }

    /// <summary>
    /// Only the engine's own diagnostics (<c>origin: error QTnnnn: text</c>, and its warnings) go through MSBuild's
    /// canonical-error parsing. That parser takes any line of the form <c>origin: words error : text</c> for an
    /// error, and a note about, say, a "calibrated output error : ..." once failed consumer builds; every other
    /// line is therefore logged as the message it is.
    /// </summary>
    protected override void LogEventsFromTextOutput(string singleLine, MessageImportance messageImportance) =>
        LogEngineLine(singleLine, messageImportance);

    /// <summary>One line of the engine's output, as <see cref="LogEventsFromTextOutput"/> logs it.</summary>
    internal void LogEngineLine(string line, MessageImportance importance)
    {
        if (line is not null && EngineDiagnostic.IsMatch(line))
        {
            base.LogEventsFromTextOutput(line, importance);
        }
        else
        {
            Log.LogMessage(importance, "{0}", line);
        }
    }

    // What the engine's QuantException.ToCanonicalString and ErrorCode's warnings write: the category, then a QT code.
    private static readonly Regex EngineDiagnostic = new(@"(?:^|[\s:])(?:error|warning) QT\d{4}\s*:", RegexOptions.CultureInvariant);

    /// <inheritdoc />
    protected override void LogToolCommand(string message) => Log.LogMessage(MessageImportance.Low, "QuantTasks engine: {0}", message);
}
