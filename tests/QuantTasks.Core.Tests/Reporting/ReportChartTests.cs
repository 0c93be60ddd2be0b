using System.Xml.Linq;
using QuantTasks.Reporting;

namespace QuantTasks.Core.Tests.Reporting;

public sealed class ReportChartTests
{
    private static QuantizationReport Report() => new([
        new ModelReport("Digits", "digits.onnx", "Digits.qtblob", 1000, 100, 10, 3.2, 1, false, null,
        [
            new TensorReport("fc1.weight", 800, 2, "kmeans", 0, 1e-5, 60),
            new TensorReport("a<b>&\"c\"", 150, 6, "kmeans", 0.5, 3e-3, 30),
            new TensorReport("emb", 50, 32, "float", 0, 0, 200),
        ], "00"),
    ]);

    [Fact]
    public void The_chart_is_well_formed_svg_with_one_row_per_tensor_and_escaped_names()
    {
        var svg = XDocument.Parse(ReportChart.ToSvg(Report()));
        XNamespace ns = "http://www.w3.org/2000/svg";

        Assert.Equal(ns + "svg", svg.Root!.Name);
        var texts = svg.Descendants(ns + "text").Select(t => t.Value).ToArray();
        Assert.Contains(texts, t => t.Contains("a<b>&\"c\"", StringComparison.Ordinal));
        Assert.Contains("float", texts);
        // Two bars per tensor (bits, sensitivity) plus the background.
        Assert.Equal(1 + (2 * 3), svg.Descendants(ns + "rect").Count());
    }

    [Fact]
    public void More_bits_and_more_sensitivity_draw_longer_bars_and_the_output_is_deterministic()
    {
        var text = ReportChart.ToSvg(Report());
        var bars = XDocument.Parse(text).Descendants().Where(e => e.Name.LocalName == "rect").Skip(1)
            .Select(r => double.Parse(r.Attribute("width")!.Value, System.Globalization.CultureInfo.InvariantCulture)).ToArray();

        // Rows in order: fc1 (2 bits, 1e-5), the escaped one (6 bits, 3e-3), emb (float, 0).
        Assert.True(bars[2] > bars[0], "6 bits draw longer than 2");
        Assert.True(bars[3] > bars[1], "3e-3 draws longer than 1e-5");
        Assert.Equal(text, ReportChart.ToSvg(Report()));
    }
}
