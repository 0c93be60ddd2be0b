using QuantTasks.Tests;

namespace QuantTasks.Build.Tests.Tasks;

public sealed class ReadQuantManifestTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void Reads_inputs_loaders_blobs_with_their_resource_names_and_reports()
    {
        var manifest = _folder.File("quant.manifest");
        File.WriteAllText(manifest, "input\t/p/quant.yaml\ninput\t/p/models/a.onnx\ncompile\t/o/AModel.g.cs\nresource\t/o/A.qtblob\tApp.Models.A.qtblob\nreport\t/o/report.json\n");
        var task = new ReadQuantManifest { ManifestPath = manifest, BuildEngine = new FakeBuildEngine() };

        Assert.True(task.Execute());

        Assert.Equal(["/p/quant.yaml", "/p/models/a.onnx"], task.Inputs.Select(i => i.ItemSpec));
        Assert.Equal("/o/AModel.g.cs", Assert.Single(task.Compile).ItemSpec);
        var resource = Assert.Single(task.Resources);
        Assert.Equal("/o/A.qtblob", resource.ItemSpec);
        Assert.Equal("App.Models.A.qtblob", resource.GetMetadata("LogicalName"));
        Assert.Equal("/o/report.json", Assert.Single(task.Reports).ItemSpec);
    }

    [Fact]
    public void A_missing_manifest_gives_nothing_and_no_error()
    {
        var engine = new FakeBuildEngine();
        var task = new ReadQuantManifest { ManifestPath = _folder.File("absent"), BuildEngine = engine };

        Assert.True(task.Execute());
        Assert.Empty(task.Inputs);
        Assert.Empty(engine.Errors);
    }

    [Fact]
    public void An_unknown_line_warns_with_QT3003_at_its_line_and_removes_the_manifest_so_the_engine_runs_again()
    {
        var manifest = _folder.File("quant.manifest");
        File.WriteAllText(manifest, "input\t/p/quant.yaml\nsomething new\t/x\n");
        var engine = new FakeBuildEngine();
        var task = new ReadQuantManifest { ManifestPath = manifest, BuildEngine = engine };

        Assert.True(task.Execute());

        var warning = Assert.Single(engine.Warnings);
        Assert.Equal("QT3003", warning.Code);
        Assert.Equal(2, warning.LineNumber);
        Assert.False(File.Exists(manifest));
        Assert.Empty(task.Inputs);
    }

    [Fact]
    public void An_input_replaced_by_a_file_with_another_size_or_time_removes_the_stamp_even_if_older()
    {
        var model = _folder.File("model.onnx");
        File.WriteAllText(model, "first");
        var seen = new FileInfo(model);
        var manifest = _folder.File("quant.manifest");
        File.WriteAllText(manifest, $"input\t{model}\t{seen.Length}\t{seen.LastWriteTimeUtc.Ticks}\n");
        var stamp = _folder.File("quant.stamp");
        File.WriteAllText(stamp, "");

        Assert.True(new ReadQuantManifest { ManifestPath = manifest, StampPath = stamp, BuildEngine = new FakeBuildEngine() }.Execute());
        Assert.True(File.Exists(stamp), "unchanged input: the stamp stays");

        File.WriteAllText(model, "second");
        File.SetLastWriteTimeUtc(model, seen.LastWriteTimeUtc.AddDays(-1));
        Assert.True(new ReadQuantManifest { ManifestPath = manifest, StampPath = stamp, BuildEngine = new FakeBuildEngine() }.Execute());
        Assert.False(File.Exists(stamp), "an older file of another size is still a change");
    }
}
