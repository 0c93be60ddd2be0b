using System.Globalization;
using System.Security;
using System.Text;

namespace QuantTasks.Reporting;

/// <summary>
/// <c>report.svg</c>: per model, one row per tensor with its bit width and its sensitivity side by side, so a
/// reviewer sees at a glance whether the search gave the sensitive tensors the bits. Sensitivities span orders
/// of magnitude, so their bars are on a log scale relative to the model's least sensitive tensor. Plain SVG with
/// no script or external font, which CI artifact viewers and GitHub render as an image.
/// </summary>
internal static class ReportChart
{
    private const int LabelWidth = 220;
    private const int BarWidth = 240;
    private const int RowHeight = 18;
    private const int Gap = 24;

    /// <summary>The chart for every model of the report.</summary>
    public static string ToSvg(QuantizationReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var body = new StringBuilder();
        var y = 10;
        foreach (var model in report.Models)
        {
            y = Model(body, model, y) + Gap;
        }

        var width = LabelWidth + (2 * BarWidth) + 110; // room for the value printed after the longest bar
        var svg = new StringBuilder();
        svg.Append(Invariant($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{y}\" viewBox=\"0 0 {width} {y}\" font-family=\"sans-serif\" font-size=\"11\">\n"));
        svg.Append(Invariant($"<rect width=\"{width}\" height=\"{y}\" fill=\"white\"/>\n"));
        svg.Append(body);
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static int Model(StringBuilder svg, ModelReport model, int top)
    {
        var bitsX = LabelWidth;
        var sensitivityX = LabelWidth + BarWidth + 30;
        svg.Append(Invariant($"<text x=\"4\" y=\"{top + 12}\" font-weight=\"bold\">{Escape(model.Name)}: {model.CompressionRatio:0.0}x, {model.AverageBits:0.00} bits per weight</text>\n"));
        svg.Append(Invariant($"<text x=\"{bitsX}\" y=\"{top + 28}\">bits (0 to 8; float shown full)</text>\n"));
        svg.Append(Invariant($"<text x=\"{sensitivityX}\" y=\"{top + 28}\">sensitivity (log scale)</text>\n"));
        var y = top + 36;

        var positive = model.Tensors.Where(t => t.Sensitivity > 0).Select(t => t.Sensitivity).ToArray();
        var low = positive.Length > 0 ? Math.Log10(positive.Min()) : 0;
        var high = positive.Length > 0 ? Math.Log10(positive.Max()) : 1;
        var span = Math.Max(high - low, 1e-9);
        foreach (var t in model.Tensors)
        {
            var bits = Math.Min(t.Bits, 8) / 8.0;
            var sensitivity = t.Sensitivity > 0 ? 0.05 + (0.95 * (Math.Log10(t.Sensitivity) - low) / span) : 0;
            var label = t.Name.Length > 34 ? "..." + t.Name[^31..] : t.Name;
            svg.Append(Invariant($"<text x=\"4\" y=\"{y + 12}\"><title>{Escape(t.Name)}</title>{Escape(label)}</text>\n"));
            svg.Append(Invariant($"<rect x=\"{bitsX}\" y=\"{y + 2}\" width=\"{bits * BarWidth:0.#}\" height=\"{RowHeight - 5}\" fill=\"#3b6fb6\"/>\n"));
            svg.Append(Invariant($"<text x=\"{bitsX + (bits * BarWidth) + 3:0.#}\" y=\"{y + 12}\">{(t.Method == "float" ? "float" : t.Bits.ToString(CultureInfo.InvariantCulture))}</text>\n"));
            svg.Append(Invariant($"<rect x=\"{sensitivityX}\" y=\"{y + 2}\" width=\"{sensitivity * BarWidth:0.#}\" height=\"{RowHeight - 5}\" fill=\"#e08a2c\"/>\n"));
            svg.Append(Invariant($"<text x=\"{sensitivityX + (sensitivity * BarWidth) + 3:0.#}\" y=\"{y + 12}\">{t.Sensitivity:G3}</text>\n"));
            y += RowHeight;
        }

        return model.Finetune is { Epochs.Count: > 1 } training ? Curve(svg, training, y + 8) : y;
    }

    private const int CurveHeight = 90;

    /// <summary>
    /// Fine-tuning's curve under the model's bars: training and held-out loss per epoch (one shared linear scale
    /// from zero), the kept epoch marked, and the held-out accuracy of the first and kept epochs written out.
    /// </summary>
    private static int Curve(StringBuilder svg, TrainingReport training, int top)
    {
        var x0 = LabelWidth;
        var width = (2 * BarWidth) + 30;
        var epochs = training.Epochs;
        var losses = epochs.SelectMany(e => new[] { e.TrainingLoss, e.HeldOutLoss }).OfType<double>().Where(double.IsFinite).ToArray();
        var high = losses.Length == 0 ? 1 : Math.Max(losses.Max(), 1e-12);
        double X(int i) => x0 + (width * i / (double)Math.Max(epochs.Count - 1, 1));
        double Y(double loss) => top + 16 + (CurveHeight * (1 - Math.Min(loss / high, 1)));

        svg.Append(Invariant($"<text x=\"4\" y=\"{top + 12}\">fine-tuning ({Escape(training.Loss)}): loss per epoch</text>\n"));
        svg.Append(Invariant($"<rect x=\"{x0}\" y=\"{top + 16}\" width=\"{width}\" height=\"{CurveHeight}\" fill=\"none\" stroke=\"#cccccc\"/>\n"));
        Polyline(svg, epochs.Select((e, i) => (i, e.TrainingLoss)), X, Y, "#3b6fb6");
        Polyline(svg, epochs.Select((e, i) => (i, e.HeldOutLoss)), X, Y, "#e08a2c");
        var kept = epochs.Select((e, i) => (Epoch: e, Index: i)).LastOrDefault(p => p.Epoch.Epoch == training.BestEpoch);
        if (kept.Epoch is { HeldOutLoss: { } keptLoss })
        {
            svg.Append(Invariant($"<circle cx=\"{X(kept.Index):0.#}\" cy=\"{Y(keptLoss):0.#}\" r=\"3\" fill=\"#e08a2c\"><title>kept epoch {training.BestEpoch}</title></circle>\n"));
        }

        var legend = top + CurveHeight + 30;
        var accuracy = training.Metric is null || epochs[0].HeldOutAccuracy is null ? ""
            : Invariant($"; held-out {training.Metric} {epochs[0].HeldOutAccuracy:0.00}% before, {(kept.Epoch ?? epochs[^1]).HeldOutAccuracy:0.00}% kept");
        svg.Append(Invariant($"<text x=\"{x0}\" y=\"{legend}\"><tspan fill=\"#3b6fb6\">training</tspan> and <tspan fill=\"#e08a2c\">held-out</tspan> loss, 0 to {high:G3}; epochs 0 to {epochs[^1].Epoch}, kept {training.BestEpoch}{Escape(accuracy)}</text>\n"));
        return legend + 6;
    }

    private static void Polyline(StringBuilder svg, IEnumerable<(int Index, double? Loss)> points, Func<int, double> x, Func<double, double> y, string colour)
    {
        var drawn = points.Where(p => p.Loss is { } l && double.IsFinite(l)).Select(p => Invariant($"{x(p.Index):0.#},{y(p.Loss!.Value):0.#}")).ToArray();
        if (drawn.Length > 1)
        {
            svg.Append(Invariant($"<polyline points=\"{string.Join(' ', drawn)}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>\n"));
        }
    }

    private static string Escape(string text) => SecurityElement.Escape(text) ?? "";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
