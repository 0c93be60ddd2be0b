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

        return y;
    }

    private static string Escape(string text) => SecurityElement.Escape(text) ?? "";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
