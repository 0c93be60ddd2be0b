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

    [Fact]
    public void A_fine_tuned_model_gets_its_loss_curves_with_the_kept_epoch_marked_and_the_table_in_markdown()
    {
        var curve = new TrainingReport("mixed", "top1", 900, 100, 2, true, 3.5, 708,
        [
            new EpochReport(0, "shared", 0, 0, null, 0.30, 95.0),
            new EpochReport(1, "shared", 1, 1e-3, 0.40, 0.20, 97.0),
            new EpochReport(2, "shared", 1, 5e-4, 0.25, 0.10, 98.0),
            new EpochReport(3, "shared", 1, 1e-4, 0.20, 0.12, 97.5),
        ]);
        var report = new QuantizationReport([Report().Models[0] with { Finetune = curve }]);

        var svg = XDocument.Parse(ReportChart.ToSvg(report));
        XNamespace ns = "http://www.w3.org/2000/svg";

        var lines = svg.Descendants(ns + "polyline").ToArray();
        Assert.Equal(2, lines.Length);
        Assert.Equal(3, lines[0].Attribute("points")!.Value.Split(' ').Length); // training loss from epoch 1
        Assert.Equal(4, lines[1].Attribute("points")!.Value.Split(' ').Length); // held-out loss from epoch 0
        var marker = Assert.Single(svg.Descendants(ns + "circle"));
        Assert.Equal(lines[1].Attribute("points")!.Value.Split(' ')[2], marker.Attribute("cx")!.Value + "," + marker.Attribute("cy")!.Value);
        Assert.Contains(svg.Descendants(ns + "text"), t => t.Value.Contains("95.00% before, 98.00% kept", StringComparison.Ordinal));
        var markdown = report.ToMarkdown();
        Assert.Contains("kept epoch 2, stopped early", markdown, StringComparison.Ordinal);
        Assert.Contains("| 2 | shared | 1 | 0.0005 | 0.2500 | 0.1000 | 98.00 |", markdown, StringComparison.Ordinal);
        Assert.Contains("\"epochs\": [", report.ToJson(), StringComparison.Ordinal);
    }
}
