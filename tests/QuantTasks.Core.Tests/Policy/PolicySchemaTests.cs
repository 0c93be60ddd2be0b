using System.Collections;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using QuantTasks.Policy;

namespace QuantTasks.Core.Tests.Policy;

/// <summary>quant.schema.json and the C# options must describe the same keys, values and defaults.</summary>
public class PolicySchemaTests
{
    public static TheoryData<string> OptionTypes() =>
    [
        "", "/models/0", "/data", "/sensitivity", "/quantization", "/quantization/budget",
        "/quantization/overrides/0", "/quantization/gptq", "/quantization/joint_check", "/pruning", "/encoding", "/accuracy",
    ];

    [Theory]
    [MemberData(nameof(OptionTypes))]
    public void Schema_and_options_have_the_same_keys(string location)
    {
        var (type, schema) = Resolve(location);
        var keys = ((JsonObject)schema["properties"]!).Select(p => p.Key).Order(StringComparer.Ordinal);
        var properties = type.GetProperties().Select(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name)).Order(StringComparer.Ordinal);

        Assert.Equal(keys, properties);
        Assert.False(schema["additionalProperties"]!.GetValue<bool>());
    }

    [Theory]
    [MemberData(nameof(OptionTypes))]
    public void Every_key_has_a_description_and_enums_match_the_CSharp_enums(string location)
    {
        var (type, schema) = Resolve(location);
        foreach (var property in type.GetProperties())
        {
            var key = JsonNamingPolicy.SnakeCaseLower.ConvertName(property.Name);
            var keySchema = schema["properties"]![key]!;
            Assert.False(string.IsNullOrWhiteSpace(keySchema["description"]?.GetValue<string>()), key);

            var enumType = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            if (enumType.IsEnum)
            {
                var names = Enum.GetNames(enumType).Select(n => JsonNamingPolicy.KebabCaseLower.ConvertName(n));
                Assert.Equal(names, ((JsonArray)keySchema["enum"]!).Select(v => v!.GetValue<string>()));
            }
        }
    }

    [Theory]
    [MemberData(nameof(OptionTypes))]
    public void Schema_defaults_are_the_options_defaults(string location)
    {
        var (type, schema) = Resolve(location);
        var instance = Activator.CreateInstance(type)!;
        foreach (var property in type.GetProperties())
        {
            var key = JsonNamingPolicy.SnakeCaseLower.ConvertName(property.Name);
            if (schema["properties"]![key]!["default"] is not { } expected)
            {
                continue;
            }

            var actual = JsonSerializer.SerializeToNode(property.GetValue(instance), PolicyLoader.BindingOptions);
            Assert.True(JsonNode.DeepEquals(expected, actual), $"{location}/{key}: schema {expected.ToJsonString()}, options {actual?.ToJsonString()}");
        }
    }

    [Theory]
    [MemberData(nameof(OptionTypes))]
    public void Every_key_is_in_the_policy_reference_and_the_template(string location)
    {
        var (_, schema) = Resolve(location);
        var prefix = string.Join('.', location.Split('/', StringSplitOptions.RemoveEmptyEntries).Select(s => int.TryParse(s, out _) ? "[]" : s));
        var docs = File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "policy.md"));
        var template = PolicyTemplate.Render("quant.schema.json", "models/model.onnx", "data/calibration.npz", "data/test.npz");
        foreach (var key in ((JsonObject)schema["properties"]!).Select(p => p.Key))
        {
            Assert.Contains($"| `{(prefix.Length == 0 ? key : prefix + "." + key)}` |", docs, StringComparison.Ordinal);
            Assert.Contains(key + ":", template, StringComparison.Ordinal);
        }
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "QuantTasks.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("The tests run outside the repository.");
    }

    [Theory]
    [InlineData("/quantization")]
    [InlineData("/quantization/overrides/0")]
    public void The_methods_the_schema_allows_are_exactly_the_registered_quantizers_and_auto(string location)
    {
        var (_, schema) = Resolve(location);

        // auto is not a quantizer: it lets the search pick among the registered ones.
        var allowed = ((JsonArray)schema["properties"]!["method"]!["enum"]!).Select(v => v!.GetValue<string>())
            .Where(m => m != QuantizationMethods.Auto).Order(StringComparer.Ordinal);

        Assert.Equal(QuantTasks.Quantization.QuantizerRegistry.Default.Names, allowed);
    }

    [Fact]
    public void The_schema_is_draft_07() =>
        Assert.Equal("http://json-schema.org/draft-07/schema#", PolicySchema.Node["$schema"]!.GetValue<string>());

    // The options type and the subschema at a pointer into a policy document.
    private static (Type Type, JsonNode Schema) Resolve(string location)
    {
        var type = typeof(QuantPolicy);
        var schema = PolicySchema.Node;
        foreach (var segment in location.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (int.TryParse(segment, out _))
            {
                type = type.GetInterfaces().Append(type)
                    .First(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IEnumerable<>))
                    .GetGenericArguments()[0];
                schema = schema["items"]!;
                continue;
            }

            var property = type.GetProperties().Single(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name) == segment);
            type = property.PropertyType;
            schema = schema["properties"]![segment]!;
        }

        Assert.False(typeof(IEnumerable).IsAssignableFrom(type) && type != typeof(string), location);
        return (type, schema);
    }
}
