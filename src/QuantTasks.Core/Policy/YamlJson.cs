using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace QuantTasks.Policy;

/// <summary>A 1-based position in a YAML file.</summary>
/// <param name="Line">1-based line.</param>
/// <param name="Column">1-based column.</param>
internal readonly record struct YamlPosition(int Line, int Column);

/// <summary>
/// A YAML document as a JSON tree, for validation against a JSON schema, with the position of every key and
/// value by JSON pointer so that a schema error can name its line and column.
/// </summary>
internal sealed partial class YamlJson
{
    private readonly Dictionary<string, YamlPosition> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, YamlPosition> _keys = new(StringComparer.Ordinal);

    private YamlJson()
    {
    }

    /// <summary>The document's root (null for an empty document).</summary>
    public JsonNode? Root { get; private set; }

    /// <summary>Parses YAML text.</summary>
    /// <exception cref="YamlException">The text is not well-formed YAML.</exception>
    public static YamlJson Parse(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        var result = new YamlJson();
        if (stream.Documents.Count > 0)
        {
            result.Root = result.Convert(stream.Documents[0].RootNode, "");
        }

        return result;
    }

    /// <summary>Where the value at a JSON pointer starts; for a missing value, its nearest present parent.</summary>
    public YamlPosition ValuePosition(string pointer)
    {
        for (var p = pointer; ; p = Parent(p))
        {
            if (_values.TryGetValue(p, out var position))
            {
                return position;
            }

            if (p.Length == 0)
            {
                return new YamlPosition(1, 1);
            }
        }
    }

    /// <summary>Where the key of the member at a JSON pointer starts (its value's position for array items).</summary>
    public YamlPosition KeyPosition(string pointer) =>
        _keys.TryGetValue(pointer, out var position) ? position : ValuePosition(pointer);

    /// <summary>The pointer of the parent of <paramref name="pointer"/>.</summary>
    public static string Parent(string pointer)
    {
        var slash = pointer.LastIndexOf('/');
        return slash <= 0 ? "" : pointer[..slash];
    }

    /// <summary>Escapes a key for use in a JSON pointer (RFC 6901).</summary>
    public static string Escape(string key) => key.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);

    private JsonNode? Convert(YamlNode node, string pointer)
    {
        _values[pointer] = new YamlPosition((int)node.Start.Line, (int)node.Start.Column);
        switch (node)
        {
            case YamlMappingNode mapping:
                var obj = new JsonObject();
                foreach (var (key, value) in mapping.Children)
                {
                    var name = key is YamlScalarNode scalarKey ? scalarKey.Value ?? "" : key.ToString();
                    var child = pointer + "/" + Escape(name);
                    if (_keys.ContainsKey(child))
                    {
                        throw new YamlException(key.Start, key.End, $"The key '{name}' appears twice in the same map");
                    }

                    _keys[child] = new YamlPosition((int)key.Start.Line, (int)key.Start.Column);

                    // `key:` with nothing after it (every child commented out, say) means the key is not given.
                    if (Convert(value, child) is { } converted)
                    {
                        obj[name] = converted;
                    }
                }

                return obj;
            case YamlSequenceNode sequence:
                var array = new JsonArray();
                for (var i = 0; i < sequence.Children.Count; i++)
                {
                    array.Add(Convert(sequence.Children[i], pointer + "/" + i.ToString(CultureInfo.InvariantCulture)));
                }

                return array;
            case YamlScalarNode scalar:
                return ConvertScalar(scalar);
            default:
                return null;
        }
    }

    // YAML 1.2 core schema: plain scalars may be null, booleans or numbers; quoted ones are always strings.
    private static JsonValue? ConvertScalar(YamlScalarNode scalar)
    {
        var text = scalar.Value ?? "";
        if (scalar.Style is not ScalarStyle.Plain)
        {
            return JsonValue.Create(text);
        }

        if (text is "" or "~" or "null" or "Null" or "NULL")
        {
            return null;
        }

        if (text is "true" or "True" or "TRUE")
        {
            return JsonValue.Create(true);
        }

        if (text is "false" or "False" or "FALSE")
        {
            return JsonValue.Create(false);
        }

        if (IntegerPattern().IsMatch(text) && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
        {
            return JsonValue.Create(integer);
        }

        if (FloatPattern().IsMatch(text) && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
        {
            return JsonValue.Create(number);
        }

        return JsonValue.Create(text);
    }

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntegerPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();
}
