using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace QuantTasks.Policy;

/// <summary>
/// A number of bytes, written in a policy as an integer or as text with a unit: <c>B</c>; decimal <c>KB</c>,
/// <c>MB</c>, <c>GB</c> (powers of 1000); binary <c>KiB</c>, <c>MiB</c>, <c>GiB</c> (powers of 1024).
/// </summary>
/// <param name="Bytes">The size in bytes.</param>
[JsonConverter(typeof(ByteSizeJsonConverter))]
internal readonly partial record struct ByteSize(long Bytes)
{
    /// <summary>Parses <c>65536</c>, <c>64KB</c>, <c>1.5 MiB</c> and the like.</summary>
    public static bool TryParse(string text, out ByteSize size)
    {
        size = default;
        var match = Pattern().Match(text ?? "");
        if (!match.Success)
        {
            return false;
        }

        var number = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        var unit = match.Groups[2].Value;
        double multiplier = unit switch
        {
            "" or "B" => 1,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            _ => 1024 * 1024 * 1024,
        };
        var bytes = number * multiplier;
        if (bytes is < 1 or > long.MaxValue)
        {
            return false;
        }

        size = new ByteSize((long)Math.Round(bytes));
        return true;
    }

    /// <inheritdoc/>
    public override string ToString() => Bytes.ToString(CultureInfo.InvariantCulture) + " B";

    [GeneratedRegex(@"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")]
    private static partial Regex Pattern();
}

/// <summary>Reads a <see cref="ByteSize"/> from a JSON number or string.</summary>
internal sealed class ByteSizeJsonConverter : JsonConverter<ByteSize>
{
    public override ByteSize Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number)
        {
            return new ByteSize(reader.GetInt64());
        }

        var text = reader.GetString() ?? "";
        return ByteSize.TryParse(text, out var size) ? size : throw new JsonException($"'{text}' is not a size.");
    }

    public override void Write(Utf8JsonWriter writer, ByteSize value, JsonSerializerOptions options) =>
        writer.WriteNumberValue(value.Bytes);
}
