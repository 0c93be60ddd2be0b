using QuantTasks.Engine.Graph;
using QuantTasks.Engine.Native;
using QuantTasks.Tests;
using TorchSharp;

namespace QuantTasks.Engine.Tests.Native;

[Collection(LibTorchTestGroup.Name)]
public class LibTorchTests
{
    /// <summary>
    /// f(x) = sum(a_i x_i^3) + (b.x)^2 has the Hessian H = diag(6 a_i x_i) + 2 b b^T, so H v is known exactly;
    /// TorchSharp's double backward must reproduce it.
    /// </summary>
    [Fact]
    public void A_Hessian_vector_product_through_TorchSharp_matches_the_analytic_value()
    {
        LibTorch.EnsureLoaded();
        double[] a = [0.5, -1.0, 2.0, 0.25];
        double[] b = [1.0, 2.0, -1.0, 0.5];
        double[] x = [0.3, -0.7, 1.1, 2.0];
        double[] v = [1.0, -0.5, 0.25, 2.0];

        using var scope = torch.NewDisposeScope();
        var xt = torch.tensor(x, dtype: torch.float64, requires_grad: true);
        var at = torch.tensor(a, dtype: torch.float64);
        var bt = torch.tensor(b, dtype: torch.float64);
        var f = (at * xt.pow(3)).sum() + (bt * xt).sum().pow(2);
        var gradient = torch.autograd.grad([f], [xt], create_graph: true, retain_graph: true)[0];
        var hv = torch.autograd.grad([(gradient * torch.tensor(v, dtype: torch.float64)).sum()], [xt])[0].data<double>().ToArray();

        var bv = b.Zip(v, (p, q) => p * q).Sum();
        for (var i = 0; i < x.Length; i++)
        {
            var expected = (6 * a[i] * x[i] * v[i]) + (2 * b[i] * bv);
            Assert.Equal(expected, hv[i], 12);
        }
    }

    [Fact]
    public void Loading_twice_is_harmless_and_says_how_it_loaded()
    {
        LibTorch.EnsureLoaded();
        LibTorch.EnsureLoaded();

        Assert.False(string.IsNullOrEmpty(LibTorch.LoadedHow));
    }

    [Fact]
    public void A_graph_with_strided_convolutions_runs_without_oneDNN_and_gives_the_choice_back_when_disposed()
    {
        LibTorch.EnsureLoaded();

        // Read back from libtorch itself; the operator tests show what it mends (a 4 x 4 kernel at stride 2).
        // LeNet-5's convolutions (5 x 5, stride 1) keep oneDNN; the ResNet's strided ones do not.
        using (TorchGraph.Compile(Onnx.OnnxModel.Load(Fixtures.Model("lenet5.onnx")), [], torch.CPU))
        {
            Assert.True(OneDnn.Enabled());
            using (TorchGraph.Compile(Onnx.OnnxModel.Load(Fixtures.Model("resnet-bn.onnx")), [], torch.CPU))
            {
                Assert.False(OneDnn.Enabled());
            }

            Assert.True(OneDnn.Enabled());
        }
    }

    [Fact]
    public void The_host_libstdcxx_is_read_from_its_version_definitions()
    {
        // Every libstdc++ that .NET runs with defines the GCC 4 versions; the newest it defines decides the patch.
        Assert.True(LibTorch.HostLibStdCxxProvides("GLIBCXX_3.4"));
        Assert.False(LibTorch.HostLibStdCxxProvides("GLIBCXX_99.0"));
    }

    [Fact]
    public void The_patched_copy_drops_only_the_unused_symbols_version_and_leaves_the_original_untouched()
    {
        using var cache = new TempFolder();
        var original = LibTorch.FindOriginalGlue()!;
        var before = File.ReadAllBytes(original);

        var patched = LibTorch.PatchedCopy(original, cache.Path);
        var again = LibTorch.PatchedCopy(original, cache.Path);

        Assert.Equal(before, File.ReadAllBytes(original));
        Assert.Equal(patched, again);
        Assert.StartsWith(cache.Path, patched, StringComparison.Ordinal);
        var image = ElfImage.Parse(File.ReadAllBytes(patched));
        var originalImage = ElfImage.Parse(before);
        Assert.Equal(ElfImage.VersionIndexGlobal, image.SymbolVersionIndex(LibTorch.UnusedSymbol));
        Assert.NotEqual(ElfImage.VersionIndexGlobal, originalImage.SymbolVersionIndex(LibTorch.UnusedSymbol));
        var needed = image.NeededVersions().Single(n => n.Version == LibTorch.MissingVersion);
        Assert.Equal(ElfImage.VersionFlagWeak, needed.Flags & ElfImage.VersionFlagWeak);
        // Every other needed version keeps its flags: only the one edit is made.
        Assert.Equal(
            originalImage.NeededVersions().Where(n => n.Version != LibTorch.MissingVersion),
            image.NeededVersions().Where(n => n.Version != LibTorch.MissingVersion));
        var differing = before.Zip(File.ReadAllBytes(patched)).Count(p => p.First != p.Second);
        Assert.InRange(differing, 2, 4);
    }
}
