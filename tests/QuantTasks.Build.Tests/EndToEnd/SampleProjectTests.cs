using System.Globalization;
using System.Text.RegularExpressions;

namespace QuantTasks.Build.Tests.EndToEnd;

/// <summary>The README's main job: `dotnet run --project sample-project` builds the sample, which compresses its model.</summary>
/// <remarks>
/// In the package feed's collection, not for the feed but so that it never runs beside the packing: both build the
/// checkout's engine in Release, and two builds of one project at once collide on its output files.
/// </remarks>
[Collection(SharedPackageFeed.Name)]
public sealed partial class SampleProjectTests
{
    [Fact]
    public void The_sample_app_runs_with_weights_at_least_10x_smaller_and_at_most_half_a_point_less_accurate()
    {
        var (exit, output) = DotNet.Run(DotNet.RepositoryRoot, "run", "--project", "sample-project", "-nodeReuse:false", "-p:UseSharedCompilation=false");

        Assert.True(exit == 0, output);
        var size = Smaller().Match(output);
        Assert.True(size.Success, output);
        Assert.True(double.Parse(size.Groups[1].Value, CultureInfo.InvariantCulture) >= 10, output);
        var accuracy = Loss().Match(output);
        Assert.True(accuracy.Success, output);
        Assert.True(double.Parse(accuracy.Groups[1].Value, CultureInfo.InvariantCulture) <= 0.5, output);
        Assert.Matches(@"Accuracy on 2,000 held-out digits: \d+\.\d\d%", output);
    }

    [GeneratedRegex(@"\((\d+\.\d)x smaller\)")]
    private static partial Regex Smaller();

    [GeneratedRegex(@"a loss of (-?\d+\.\d\d) percentage points")]
    private static partial Regex Loss();
}
