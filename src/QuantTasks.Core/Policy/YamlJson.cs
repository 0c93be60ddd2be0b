using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

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

    /// <summary>How deeply maps and lists may nest; a real policy needs five levels.</summary>
    public const int MaxDepth = 64;

    /// <summary>How many nodes the document may hold once its aliases are expanded (the "billion laughs" bound).</summary>
    public const int MaxNodes = 100_000;

    /// <summary>
    /// Parses YAML text. The tree is built from the parser's events with an explicit stack, never by recursion,
    /// so that no nesting can overflow the stack, and aliases are expanded against a node budget.
    /// </summary>
    /// <exception cref="YamlException">The text is not well-formed YAML.</exception>
    /// <exception cref="YamlLimitException">The document nests deeper than <see cref="MaxDepth"/>, expands beyond <see cref="MaxNodes"/>, or an alias refers to a node that contains it.</exception>
    public static YamlJson Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        CheckPrintable(text);
        try
        {
            return ParseEvents(text);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or IndexOutOfRangeException or FormatException or OverflowException)
        {
            // YamlDotNet's scanner has states in which malformed input escapes as a plain exception.
            throw new YamlException(new Mark(0, 1, 1), new Mark(0, 1, 1), $"The YAML parser could not read the text ({e.Message.TrimEnd('.')})", e);
        }
    }

    // YAML allows only printable characters (tab, line breaks and the printable ranges); a NUL or another control
    // character is reported where it is rather than wherever the parser happens to trip over it.
    private static void CheckPrintable(string text)
    {
        var line = 1;
        var column = 1;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '\n')
            {
                line++;
                column = 1;
                continue;
            }

            var printable = c is '\t' or '\r' or '\u0085' || (c >= ' ' && c <= '~') || (c >= '\u00A0' && c <= '\uFFFD' && c != '\uFEFF' || char.IsSurrogate(c));
            if (!printable && !(c == '\uFEFF' && i == 0))
            {
                var mark = new Mark(i, line, column);
                throw new YamlException(mark, mark, string.Create(CultureInfo.InvariantCulture,
                    $"The character U+{(int)c:X4} is not allowed in YAML (only printable characters, tabs and line breaks are)"));
            }

            column++;
        }
    }

    private static YamlJson ParseEvents(string text)
    {
        var result = new YamlJson();
        var parser = new Parser(new StringReader(text));
        parser.Consume<StreamStart>();
        if (parser.Accept<DocumentStart>(out _))
        {
            parser.Consume<DocumentStart>();
            result.Root = result.ReadDocument(parser);
            parser.Consume<DocumentEnd>();
        }

        // Later documents are checked for syntax, as a YAML stream must be, but not used.
        while (parser.MoveNext())
        {
        }

        return result;
    }

    /// <summary>One open map or list while the tree is built.</summary>
    private sealed class Frame(JsonNode container, string pointer, string? anchor)
    {
        public JsonNode Container { get; } = container;

        public string Pointer { get; } = pointer;

        public string? Anchor { get; } = anchor;

        public int Nodes { get; set; } = 1;

        public string? Key { get; set; }

        public bool ExpectsKey { get; set; } = container is JsonObject;
    }

    private JsonNode? ReadDocument(IParser parser)
    {
        var anchors = new Dictionary<string, (JsonNode? Node, int Nodes)>(StringComparer.Ordinal);
        var open = new HashSet<string>(StringComparer.Ordinal);
        var stack = new Stack<Frame>();
        var total = 0;
        JsonNode? root = null;

        while (true)
        {
            var e = parser.Consume<ParsingEvent>();
            if (e is MappingEnd or SequenceEnd)
            {
                var done = stack.Pop();
                Complete(done.Container, done.Nodes, done.Anchor);
                if (stack.Count == 0)
                {
                    return root;
                }

                continue;
            }

            var parent = stack.Count > 0 ? stack.Peek() : null;
            if (parent is { ExpectsKey: true })
            {
                parent.Key = KeyOf(e, anchors, parent.Pointer);
                parent.ExpectsKey = false;
                continue;
            }

            var pointer = parent is null ? ""
                : parent.Container is JsonObject ? parent.Pointer + "/" + Escape(parent.Key!)
                : parent.Pointer + "/" + ((JsonArray)parent.Container).Count.ToString(CultureInfo.InvariantCulture);
            _values[pointer] = new YamlPosition((int)e.Start.Line, (int)e.Start.Column);

            JsonNode? value;
            int nodes;
            switch (e)
            {
                case MappingStart or SequenceStart:
                    if (stack.Count >= MaxDepth)
                    {
                        throw new YamlLimitException(e.Start, e.End,
                            $"The policy nests maps and lists more than {MaxDepth} levels deep; a policy needs only a few");
                    }

                    CountNodes(ref total, 1, e);
                    var anchor = e is MappingStart m ? m.Anchor : ((SequenceStart)e).Anchor;
                    var name = anchor.IsEmpty ? null : anchor.Value;
                    if (name is not null)
                    {
                        open.Add(name);
                        anchors.Remove(name);
                    }

                    JsonNode container = e is MappingStart ? new JsonObject() : new JsonArray();
                    Attach(parent, container);
                    stack.Push(new Frame(container, pointer, name));
                    root ??= container;
                    continue;
                case Scalar scalar:
                    CountNodes(ref total, 1, e);
                    value = ConvertScalar(scalar);
                    nodes = 1;
                    if (!scalar.Anchor.IsEmpty)
                    {
                        anchors[scalar.Anchor.Value] = (value?.DeepClone(), 1);
                    }

                    break;
                case AnchorAlias alias:
                    if (open.Contains(alias.Value.Value) && !anchors.ContainsKey(alias.Value.Value))
                    {
                        throw new YamlLimitException(e.Start, e.End,
                            $"The alias *{alias.Value.Value} refers to the node that contains it, which would never end");
                    }

                    if (!anchors.TryGetValue(alias.Value.Value, out var target))
                    {
                        throw new YamlException(e.Start, e.End, $"The alias *{alias.Value.Value} names no anchor defined before it");
                    }

                    CountNodes(ref total, target.Nodes, e);
                    value = target.Node?.DeepClone();
                    nodes = target.Nodes;
                    break;
                default:
                    throw new YamlException(e.Start, e.End, $"Unexpected YAML event {e.GetType().Name}");
            }

            if (parent is null)
            {
                return value;
            }

            Attach(parent, value);
            parent.Nodes += nodes;
        }

        void Complete(JsonNode container, int nodes, string? anchor)
        {
            if (stack.Count > 0)
            {
                stack.Peek().Nodes += nodes;
            }

            if (anchor is not null)
            {
                open.Remove(anchor);
                anchors[anchor] = (container.DeepClone(), nodes);
            }
        }
    }

    private static void Attach(Frame? parent, JsonNode? value)
    {
        if (parent is null)
        {
            return;
        }

        if (parent.Container is JsonArray array)
        {
            array.Add(value);
            return;
        }

        // `key:` with nothing after it (every child commented out, say) means the key is not given.
        if (value is not null)
        {
            parent.Container.AsObject()[parent.Key!] = value;
        }

        parent.ExpectsKey = true;
    }

    private string KeyOf(ParsingEvent e, Dictionary<string, (JsonNode? Node, int Nodes)> anchors, string pointer)
    {
        var name = e switch
        {
            Scalar scalar => scalar.Value ?? "",
            AnchorAlias alias when anchors.TryGetValue(alias.Value.Value, out var target) && target.Node is JsonValue v => v.ToString(),
            _ => throw new YamlException(e.Start, e.End, "A key must be plain text; a list, a map or an alias cannot be a key here"),
        };
        var child = pointer + "/" + Escape(name);
        if (_keys.ContainsKey(child))
        {
            throw new YamlException(e.Start, e.End, $"The key '{name}' appears twice in the same map");
        }

        _keys[child] = new YamlPosition((int)e.Start.Line, (int)e.Start.Column);
        return name;
    }

    private static void CountNodes(ref int total, int add, ParsingEvent e)
    {
        total += add;
        if (total > MaxNodes)
        {
            throw new YamlLimitException(e.Start, e.End,
                FormattableString.Invariant($"The policy expands to more than {MaxNodes:N0} values once its aliases are replaced by what they name"));
        }
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

    // YAML 1.2 core schema: plain scalars may be null, booleans or numbers; quoted ones are always strings.
    private static JsonValue? ConvertScalar(Scalar scalar)
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
            if (!double.IsFinite(number))
            {
                throw new YamlLimitException(scalar.Start, scalar.End,
                    $"The number {text} is beyond what a double holds (about 1.8e308)", Diagnostics.ErrorCode.PolicyInvalidValue);
            }

            return JsonValue.Create(number);
        }

        return JsonValue.Create(text);
    }

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntegerPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();
}

/// <summary>A policy that is well-formed YAML but over one of the limits that keep parsing bounded.</summary>
internal sealed class YamlLimitException : YamlException
{
    public YamlLimitException(Mark start, Mark end, string message, Diagnostics.ErrorCode code = Diagnostics.ErrorCode.InputTooLarge)
        : base(start, end, message)
    {
        Code = code;
    }

    /// <summary>The error code the policy loader reports.</summary>
    public Diagnostics.ErrorCode Code { get; }
}
