using System.Globalization;
using System.Text.Json.Nodes;
using NJsonSchema.Validation;
using QuantTasks.Diagnostics;

namespace QuantTasks.Policy;

/// <summary>
/// <c>quant.schema.json</c>, the single definition of the policy's keys: editors use it for completion, and
/// every policy is validated against it before it is bound to <see cref="QuantPolicy"/>.
/// </summary>
internal static class PolicySchema
{
    private const string ResourceName = "QuantTasks.quant.schema.json";

    private static readonly Lazy<string> s_text = new(() =>
    {
        using var stream = typeof(PolicySchema).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"The embedded resource {ResourceName} is missing from the build.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    });

    private static readonly Lazy<NJsonSchema.JsonSchema> s_schema =
        new(() => NJsonSchema.JsonSchema.FromJsonAsync(s_text.Value).GetAwaiter().GetResult());

    private static readonly Lazy<JsonNode> s_node = new(() => JsonNode.Parse(s_text.Value)!);

    /// <summary>The schema's text, as shipped.</summary>
    public static string Text => s_text.Value;

    /// <summary>The schema as a JSON tree.</summary>
    public static JsonNode Node => s_node.Value;

    /// <summary>Validates a parsed policy and returns one error per violation, in file order.</summary>
    internal static List<QuantException> Validate(YamlJson document, string file)
    {
        var json = document.Root?.ToJsonString() ?? "null";
        var errors = new List<QuantException>();
        foreach (var error in s_schema.Value.Validate(json))
        {
            Collect(error, document, file, errors);
        }

        return errors
            .OrderBy(e => e.Location?.Line ?? 0)
            .ThenBy(e => e.Location?.Column ?? 0)
            .ToList();
    }

    private static void Collect(ValidationError error, YamlJson document, string file, List<QuantException> errors)
    {
        // Errors inside array items and oneOf branches are reported by their innermost cause.
        if (error is ChildSchemaValidationError child && error.Kind is ValidationErrorKind.ArrayItemNotValid
                or ValidationErrorKind.AdditionalItemNotValid)
        {
            foreach (var inner in child.Errors.Values.SelectMany(e => e))
            {
                Collect(inner, document, file, errors);
            }

            return;
        }

        var pointer = ToPointer(error.Path ?? "", document.Root);
        errors.Add(Describe(error, pointer, document, file));
    }

    private static QuantException Describe(ValidationError error, string pointer, YamlJson document, string file)
    {
        var key = Display(pointer);
        var parent = Display(YamlJson.Parent(pointer));
        var schema = SchemaAt(pointer);
        var value = Lookup(document.Root, pointer);
        var at = document.ValuePosition(pointer);
        var code = ErrorCode.PolicySchema;
        string message;
        switch (error.Kind)
        {
            case ValidationErrorKind.NoAdditionalPropertiesAllowed:
                code = ErrorCode.PolicyUnknownKey;
                at = document.KeyPosition(pointer);
                var name = LastSegment(pointer);
                var known = AllowedKeys(YamlJson.Parent(pointer));
                var suggestion = Suggest(name, known);
                message = $"Unknown key '{name}' in {(parent.Length == 0 ? "the policy" : parent)}."
                    + (suggestion is null ? "" : $" Did you mean '{suggestion}'?")
                    + $" Allowed keys: {string.Join(", ", known)}.";
                break;
            case ValidationErrorKind.PropertyRequired:
                code = ErrorCode.PolicyMissingKey;
                at = document.ValuePosition(YamlJson.Parent(pointer));
                message = $"{(parent.Length == 0 ? "The policy" : parent)} needs the key '{LastSegment(pointer)}'.";
                break;
            case ValidationErrorKind.TooFewProperties or ValidationErrorKind.TooManyProperties
                when pointer.EndsWith("/budget", StringComparison.Ordinal):
                code = ErrorCode.PolicyBudget;
                message = error.Kind == ValidationErrorKind.TooFewProperties
                    ? $"{key} names no budget. Give exactly one of compression_ratio, max_size or average_bits."
                    : $"{key} names {(value as JsonObject)?.Count ?? 2} budgets. Give exactly one of compression_ratio, max_size or average_bits.";
                break;
            case ValidationErrorKind.NotInEnumeration:
                code = ErrorCode.PolicyInvalidValue;
                message = $"{key} is {Show(value)}; allowed: {string.Join(", ", Enumeration(schema))}.";
                break;
            case ValidationErrorKind.NumberTooSmall or ValidationErrorKind.NumberTooBig:
                code = ErrorCode.PolicyInvalidValue;
                message = $"{key} is {Show(value)}; it must be {Range(schema)}.";
                break;
            case ValidationErrorKind.TooFewItems or ValidationErrorKind.ItemsNotUnique or ValidationErrorKind.TooManyItems:
                code = ErrorCode.PolicyInvalidValue;
                message = error.Kind == ValidationErrorKind.ItemsNotUnique
                    ? $"{key} lists a value twice; list each once."
                    : $"{key} must list at least {schema?["minItems"]} item(s).";
                break;
            case ValidationErrorKind.StringTooShort:
                code = ErrorCode.PolicyInvalidValue;
                message = $"{key} must not be empty.";
                break;
            case ValidationErrorKind.PatternMismatch:
                code = ErrorCode.PolicyInvalidValue;
                message = $"{key} is {Show(value)}, which is not of the allowed form: {schema?["description"]}";
                break;
            case ValidationErrorKind.NotOneOf when pointer.EndsWith("/max_size", StringComparison.Ordinal):
                code = value?.GetValueKind() is System.Text.Json.JsonValueKind.Number or System.Text.Json.JsonValueKind.String
                    ? ErrorCode.PolicyInvalidValue
                    : ErrorCode.PolicyWrongType;
                message = $"{key} is {Show(value)}; give a number of bytes or a size such as 64KB, 1.5MB or 64KiB.";
                break;
            default:
                if (ExpectedType(error.Kind) is { } expected)
                {
                    code = ErrorCode.PolicyWrongType;
                    message = $"{key} must be {expected}, not {Describe(value)}.";
                }
                else
                {
                    message = $"{key} breaks the schema rule {error.Kind}.";
                }

                break;
        }

        return new QuantException(code, message + Help(schema, code), new SourceLocation(file, at.Line, at.Column));
    }

    // A wrong type is easiest to fix knowing what the key is for.
    private static string Help(JsonNode? schema, ErrorCode code) =>
        code == ErrorCode.PolicyWrongType && schema?["description"] is JsonValue description ? $" {description}" : "";

    private static string? ExpectedType(ValidationErrorKind kind) => kind switch
    {
        ValidationErrorKind.ObjectExpected => "a map of keys",
        ValidationErrorKind.ArrayExpected => "a list",
        ValidationErrorKind.StringExpected => "text",
        ValidationErrorKind.IntegerExpected => "a whole number",
        ValidationErrorKind.NumberExpected => "a number",
        ValidationErrorKind.BooleanExpected => "true or false",
        ValidationErrorKind.NullExpected => "empty",
        _ => null,
    };

    /// <summary>Turns NJsonSchema's path (<c>#/models[0].path</c>) into a JSON pointer, resolving dots inside keys against the document.</summary>
    private static string ToPointer(string path, JsonNode? root)
    {
        var rest = path.StartsWith("#/", StringComparison.Ordinal) ? path[2..] : path.TrimStart('#');
        var pointer = "";
        var node = root;
        while (rest.Length > 0)
        {
            if (rest[0] == '[')
            {
                var close = rest.IndexOf(']', StringComparison.Ordinal);
                var index = rest[1..close];
                pointer += "/" + index;
                node = node is JsonArray array && int.TryParse(index, CultureInfo.InvariantCulture, out var i) && i < array.Count ? array[i] : null;
                rest = rest[(close + 1)..].TrimStart('.');
                continue;
            }

            // The longest key of the current object that the path continues with.
            string? key = null;
            if (node is JsonObject obj)
            {
                key = obj.Select(p => p.Key)
                    .Where(k => rest.StartsWith(k, StringComparison.Ordinal) && (rest.Length == k.Length || rest[k.Length] is '.' or '['))
                    .OrderByDescending(k => k.Length)
                    .FirstOrDefault();
            }

            if (key is null)
            {
                var end = rest.IndexOfAny(['.', '[']);
                key = end < 0 ? rest : rest[..end];
            }

            pointer += "/" + YamlJson.Escape(key);
            node = (node as JsonObject)?[key];
            rest = rest[key.Length..].TrimStart('.');
        }

        return pointer;
    }

    /// <summary>The subschema that describes the value at a pointer, following properties and items.</summary>
    private static JsonNode? SchemaAt(string pointer)
    {
        JsonNode? schema = Node;
        foreach (var segment in Segments(pointer))
        {
            if (schema is null)
            {
                return null;
            }

            schema = int.TryParse(segment, CultureInfo.InvariantCulture, out _) && schema["items"] is { } items
                ? items
                : schema["properties"]?[segment];
        }

        return schema;
    }

    private static string[] AllowedKeys(string objectPointer) =>
        (SchemaAt(objectPointer)?["properties"] as JsonObject)?.Select(p => p.Key).ToArray() ?? [];

    private static IEnumerable<string> Enumeration(JsonNode? schema) =>
        (schema?["enum"] as JsonArray)?.Select(v => v?.ToJsonString() ?? "null") ?? [];

    private static string Range(JsonNode? schema)
    {
        var parts = new List<string>();
        if (schema?["minimum"] is { } min)
        {
            parts.Add($"at least {min}");
        }

        if (schema?["exclusiveMinimum"] is { } xmin)
        {
            parts.Add($"greater than {xmin}");
        }

        if (schema?["maximum"] is { } max)
        {
            parts.Add($"at most {max}");
        }

        if (schema?["exclusiveMaximum"] is { } xmax)
        {
            parts.Add($"less than {xmax}");
        }

        return parts.Count == 0 ? "in range" : string.Join(" and ", parts);
    }

    private static JsonNode? Lookup(JsonNode? root, string pointer)
    {
        var node = root;
        foreach (var segment in Segments(pointer))
        {
            node = node switch
            {
                JsonObject obj => obj[segment],
                JsonArray array when int.TryParse(segment, CultureInfo.InvariantCulture, out var i) && i < array.Count => array[i],
                _ => null,
            };
        }

        return node;
    }

    private static IEnumerable<string> Segments(string pointer) =>
        pointer.Split('/', StringSplitOptions.RemoveEmptyEntries)
            .Select(s => s.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal));

    private static string LastSegment(string pointer) => Segments(pointer).LastOrDefault() ?? "";

    /// <summary>A pointer as the user would write the key path: <c>models[0].path</c>.</summary>
    private static string Display(string pointer)
    {
        var text = "";
        foreach (var segment in Segments(pointer))
        {
            text += int.TryParse(segment, CultureInfo.InvariantCulture, out _) ? $"[{segment}]" : (text.Length == 0 ? segment : "." + segment);
        }

        return text;
    }

    private static string Show(JsonNode? value) => value?.ToJsonString() ?? "empty";

    private static string Describe(JsonNode? value) => value switch
    {
        null => "empty",
        JsonObject => "a map",
        JsonArray => "a list",
        JsonValue v when v.TryGetValue<string>(out var s) => $"the text \"{s}\"",
        JsonValue v when v.TryGetValue<bool>(out _) => $"the boolean {v.ToJsonString()}",
        _ => $"the number {value.ToJsonString()}",
    };

    /// <summary>The allowed key closest to a misspelt one, when it is close enough to be a likely typo.</summary>
    private static string? Suggest(string name, IReadOnlyList<string> known)
    {
        var best = known.Select(k => (Key: k, Distance: Levenshtein(name.ToLowerInvariant(), k)))
            .OrderBy(p => p.Distance)
            .FirstOrDefault();
        return best.Key is not null && best.Distance <= Math.Max(2, name.Length / 3) ? best.Key : null;
    }

    private static int Levenshtein(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + cost);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }
}
