using System.CommandLine;
using QuantTasks.Diagnostics;
using QuantTasks.Policy;

namespace QuantTasks.Cli.Commands;

/// <summary>
/// <c>dotnet quant validate [--policy FILE]</c>: checks a policy against the schema and that every file it
/// names exists. Nothing else runs.
/// </summary>
internal static class ValidateCommand
{
    public static Command Create(CommandConsole console)
    {
        var policy = new Option<string>("--policy") { Description = "The policy file.", DefaultValueFactory = _ => PolicyLoader.DefaultFileName };
        var json = new Option<bool>("--json") { Description = "Write {\"policy\", \"valid\", \"errors\"} to standard output." };
        var command = new Command("validate", "Check a quant.yaml policy against the schema, and that the files it names exist.")
        {
            policy,
            json,
        };
        command.SetAction(parse =>
        {
            var path = parse.GetRequiredValue(policy);
            try
            {
                var loaded = PolicyLoader.Load(path);
                if (parse.GetValue(json))
                {
                    console.WriteJson(new ValidationOutcome(path, true, loaded.Policy.Models.Count, []));
                }
                else
                {
                    console.WriteLine($"{path} is valid ({loaded.Policy.Models.Count} model{(loaded.Policy.Models.Count == 1 ? "" : "s")}).");
                }

                return 0;
            }
            catch (QuantException e) when (parse.GetValue(json))
            {
                console.WriteJson(new ValidationOutcome(path, false, 0, e.All.Select(ErrorOutput.From).ToArray()));
                throw;
            }
        });
        return command;
    }

    private sealed record ValidationOutcome(string Policy, bool Valid, int Models, IReadOnlyList<ErrorOutput> Errors);
}
