using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using QuantTasks.Diagnostics;
using YamlDotNet.Core;

namespace QuantTasks.Policy;

/// <summary>A policy read from a file, with the folder its relative paths are resolved from.</summary>
/// <param name="Path">The policy file, as given.</param>
/// <param name="Policy">The typed options.</param>
internal sealed record LoadedPolicy(string Path, QuantPolicy Policy)
{
    /// <summary>Where each key and value of the policy file is, for errors that point at one.</summary>
    internal YamlJson? Document { get; init; }

    /// <summary>
    /// The policy file with the line and column of the value at a JSON pointer (<c>/accuracy/max_drop</c>), or of
    /// the nearest enclosing value that is written out, so that errors found late still point at the setting
    /// to change.
    /// </summary>
    public SourceLocation Locate(string jsonPointer)
    {
        if (Document is null)
        {
            return new SourceLocation(Path);
        }

        var position = Document.ValuePosition(jsonPointer);
        return new SourceLocation(Path, position.Line, position.Column);
    }

    /// <summary>The folder that the policy's relative paths are relative to.</summary>
    public string Folder => System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Path))!;

    /// <summary>A path from the policy, resolved against the policy's folder.</summary>
    public string Resolve(string relativeOrAbsolute) => System.IO.Path.GetFullPath(relativeOrAbsolute, Folder);
}

/// <summary>
/// Reads <c>quant.yaml</c>: YAML parsed by YamlDotNet, checked against <c>quant.schema.json</c>, bound to
/// <see cref="QuantPolicy"/>, and the files it names checked to exist. Every problem is a
/// <see cref="QuantException"/> with the file's line and column; all problems found are reported together.
/// </summary>
internal static class PolicyLoader
{
    /// <summary>The name <c>dotnet quant</c> and the build look for when no policy is named.</summary>
    public const string DefaultFileName = "quant.yaml";

    /// <summary>How policy keys map to the options: snake_case keys, kebab-case enum values, no unknown members.</summary>
    public static JsonSerializerOptions BindingOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower, allowIntegerValues: false) },
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Reads, validates and binds a policy file.</summary>
    /// <exception cref="QuantException">The first problem, with the others in <see cref="QuantException.Additional"/>.</exception>
    public static LoadedPolicy Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new QuantException(ErrorCode.FileNotFound,
                $"Policy file '{path}' does not exist. Create one with 'dotnet quant init'.", new SourceLocation(path));
        }

        var bytes = InputFile.ReadAllBytes(path, "policy file", maxBytes: MaxPolicyBytes, tooLarge: ErrorCode.InputTooLarge);
        string text;
        try
        {
            text = new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes).TrimStart('\uFEFF');
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new QuantException(ErrorCode.PolicySyntax,
                $"The policy is not UTF-8 text (byte {e.Index} is not valid UTF-8). Save it as UTF-8.", new SourceLocation(path), e);
        }

        return Parse(text, path);
    }

    /// <summary>The largest policy file read: a real one is a few kilobytes.</summary>
    public const int MaxPolicyBytes = 1 << 20;

    /// <summary>Validates and binds policy text; <paramref name="path"/> is where relative paths start and what errors name.</summary>
    public static LoadedPolicy Parse(string text, string path)
    {
        YamlJson document;
        try
        {
            document = YamlJson.Parse(text);
        }
        catch (YamlLimitException e)
        {
            throw QuantException.Combine([new QuantException(e.Code, e.Message.TrimEnd('.') + ".",
                new SourceLocation(path, (int)e.Start.Line, (int)e.Start.Column), e)]);
        }
        catch (YamlException e)
        {
            throw SyntaxError(e, text, path);
        }

        if (document.Root is not JsonObject)
        {
            throw QuantException.Combine([new QuantException(ErrorCode.PolicyWrongType,
                "The policy must be a map of keys (version, models, ...); this file " + (document.Root is null ? "is empty." : "is not a map.")
                + " Start from 'dotnet quant init'.",
                new SourceLocation(path, 1, 1))]);
        }

        var errors = PolicySchema.Validate(document, path);
        if (errors.Count > 0)
        {
            throw QuantException.Combine(errors);
        }

        QuantPolicy policy;
        try
        {
            policy = WithDependentDefaults(document.Root).Deserialize<QuantPolicy>(BindingOptions)
                ?? throw new InvalidOperationException("The policy bound to null.");
        }
        catch (JsonException e)
        {
            // The schema should have caught anything binding rejects; say where, all the same.
            var pointer = "/" + (e.Path ?? "$").TrimStart('$', '.').Replace('.', '/');
            var at = document.ValuePosition(pointer);
            throw QuantException.Combine([new QuantException(ErrorCode.PolicySchema,
                $"The policy's value at {e.Path} cannot be read: {e.Message}", new SourceLocation(path, at.Line, at.Column), e)]);
        }

        var loaded = new LoadedPolicy(path, policy) { Document = document };
        var semantic = CheckFiles(loaded, document).Concat(CheckConsistency(loaded, document)).ToList();
        if (semantic.Count > 0)
        {
            throw QuantException.Combine(semantic);
        }

        return loaded;
    }

    /// <summary>
    /// Defaults that depend on the rest of the policy, filled in before binding (only where the policy is silent):
    /// <list type="bullet">
    /// <item>The default Omega (calibrated-output-error) and compensation (gptq) measure each layer's inputs on
    /// data.calibration; without calibration data the policy gets the ones that need none (omega: sensitivity,
    /// compensation: none), so it runs as written rather than failing on a default.</item>
    /// <item>The Hessian analysis is off by default, and turns on (trace) when calibration data is given and
    /// something in the policy uses it: omega sensitivity or hessian-diagonal named explicitly, the hessian-kmeans
    /// quantizer, or fine-tuning in HAWQ's order.</item>
    /// </list>
    /// </summary>
    private static JsonObject WithDependentDefaults(JsonNode root)
    {
        var copy = root.DeepClone().AsObject();
        if (copy["quantization"] is not JsonObject quantization)
        {
            copy["quantization"] = quantization = new JsonObject();
        }

        if (root["data"]?["calibration"] is null)
        {
            quantization.TryAdd("omega", "sensitivity");
            quantization.TryAdd("compensation", "none");
            return copy;
        }

        var omega = (quantization["omega"] as JsonValue)?.ToString();
        var method = (quantization["method"] as JsonValue)?.ToString();
        var order = (root["finetune"]?["order"] as JsonValue)?.ToString();
        var usesAnalysis = omega is "sensitivity" or "hessian-diagonal" || method == QuantizationMethods.HessianKmeans || order == "hawq";
        if (usesAnalysis)
        {
            if (copy["sensitivity"] is not JsonObject sensitivity)
            {
                copy["sensitivity"] = sensitivity = new JsonObject();
            }

            sensitivity.TryAdd("method", "trace");
        }

        return copy;
    }

    private static IEnumerable<QuantException> CheckFiles(LoadedPolicy loaded, YamlJson document)
    {
        var policy = loaded.Policy;
        var named = new List<(string Pointer, string Value, string What)>();
        for (var i = 0; i < policy.Models.Count; i++)
        {
            named.Add(($"/models/{i}/path", policy.Models[i].Path, "model"));
        }

        if (policy.Data.Calibration is { } calibration)
        {
            named.Add(("/data/calibration", calibration, "calibration data file"));
        }

        if (policy.Data.Evaluation is { } evaluation)
        {
            named.Add(("/data/evaluation", evaluation, "evaluation data file"));
        }

        if (policy.Data.Training is { } training)
        {
            named.Add(("/data/training", training, "training data file"));
        }

        foreach (var (pointer, value, what) in named)
        {
            var at = document.ValuePosition(pointer);
            var location = new SourceLocation(loaded.Path, at.Line, at.Column);
            if (value.Contains('\0', StringComparison.Ordinal))
            {
                yield return new QuantException(ErrorCode.PolicyInvalidValue, $"The {what} path contains a NUL character; no file has such a name.", location);
                continue;
            }

            var full = loaded.Resolve(value);
            if (!File.Exists(full) && !Directory.Exists(full))
            {
                yield return new QuantException(ErrorCode.PolicyMissingFile,
                    $"The {what} '{value}' does not exist (looked for {full}). Paths are relative to the policy file.",
                    location);
                continue;
            }

            // A pipe, device or folder is refused here, at the policy's line, before anything reads it.
            QuantException? problem = null;
            try
            {
                InputFile.OpenRead(full, what, location).Dispose();
            }
            catch (QuantException e) when (e.Code is ErrorCode.NotARegularFile or ErrorCode.FileAccess)
            {
                problem = e;
            }

            if (problem is not null)
            {
                yield return problem;
            }
        }
    }

    private static IEnumerable<QuantException> CheckConsistency(LoadedPolicy loaded, YamlJson document)
    {
        var policy = loaded.Policy;
        if (policy.Sensitivity.Method != SensitivityMethod.None && policy.Data.Calibration is null)
        {
            var at = document.ValuePosition("/data");
            yield return new QuantException(ErrorCode.PolicyMissingKey,
                $"sensitivity.method is {policy.Sensitivity.Method.ToString().ToLowerInvariant()}, which needs calibration data: add data.calibration (an .npz file), or set sensitivity.method: none.",
                new SourceLocation(loaded.Path, at.Line, at.Column));
        }

        if (policy.Finetune is { } finetune)
        {
            if (policy.Data.Training is null)
            {
                var at = document.ValuePosition("/finetune");
                yield return new QuantException(ErrorCode.PolicyMissingKey,
                    "finetune needs training samples: add data.training (an .npz file, labels optional, disjoint from data.evaluation), or remove the finetune section.",
                    new SourceLocation(loaded.Path, at.Line, at.Column));
            }

            if (finetune.Order == FinetuneOrder.Hawq && policy.Sensitivity.Method == SensitivityMethod.None)
            {
                var at = document.ValuePosition("/finetune/order");
                yield return new QuantException(ErrorCode.PolicyInvalidValue,
                    "finetune.order is hawq, which unfreezes tensors by the analysis's sensitivity, but sensitivity.method is none. Use order: joint, or turn the analysis on.",
                    new SourceLocation(loaded.Path, at.Line, at.Column));
            }
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < policy.Models.Count; i++)
        {
            var name = ModelName(policy.Models[i]);
            if (!names.Add(name))
            {
                var at = document.ValuePosition($"/models/{i}");
                yield return new QuantException(ErrorCode.PolicyInvalidValue,
                    $"Two models would generate the class {name}Model. Give one of them another 'name'.",
                    new SourceLocation(loaded.Path, at.Line, at.Column));
            }
        }
    }

    /// <summary>The generated class's name without its <c>Model</c> suffix: the policy's name, or one made from the file name.</summary>
    public static string ModelName(ModelOptions model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!string.IsNullOrEmpty(model.Name))
        {
            return model.Name;
        }

        var stem = System.IO.Path.GetFileNameWithoutExtension(model.Path);
        var words = stem.Split(['-', '_', '.', ' '], StringSplitOptions.RemoveEmptyEntries);
        var name = string.Concat(words.Select(w => char.ToUpperInvariant(w[0]) + w[1..]));
        name = new string(name.Where(char.IsLetterOrDigit).ToArray());
        return name.Length == 0 || char.IsDigit(name[0]) ? "Model" + name : name;
    }

    private static QuantException SyntaxError(YamlException e, string text, string path)
    {
        var line = (int)e.Start.Line;
        var column = (int)e.Start.Column;
        var lines = text.Split('\n');
        var reason = e.InnerException?.Message ?? e.Message;

        // YamlDotNet reports a tab in the indentation as a token that cannot start; say what it is.
        for (var i = 0; i < lines.Length; i++)
        {
            var indent = lines[i].Length - lines[i].TrimStart(' ', '\t').Length;
            // YamlDotNet places some tab errors at the enclosing map's start (even line 1), so a message about a
            // tab is matched with the first line indented by one, wherever it is.
            var near = i + 1 == line || i + 2 == line || i == line || reason.Contains("tab", StringComparison.OrdinalIgnoreCase);
            if (lines[i][..indent].Contains('\t', StringComparison.Ordinal) && near)
            {
                return QuantException.Combine([new QuantException(ErrorCode.PolicySyntax,
                    "A tab is used for indentation; YAML allows only spaces. Replace the tab with spaces.",
                    new SourceLocation(path, i + 1, lines[i].IndexOf('\t', StringComparison.Ordinal) + 1), e)]);
            }
        }

        var message = reason.Contains(')', StringComparison.Ordinal) && reason.StartsWith('(')
            ? reason[(reason.IndexOf(')', StringComparison.Ordinal) + 1)..].TrimStart(':', ' ')
            : reason;
        return QuantException.Combine([new QuantException(ErrorCode.PolicySyntax,
            $"The policy is not valid YAML: {message.TrimEnd('.')}. Check the indentation and quoting around this position.",
            new SourceLocation(path, line, column), e)]);
    }
}
