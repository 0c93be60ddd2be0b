using System.Globalization;
using QuantTasks.Data;

namespace QuantTasks.Diagnostics;

/// <summary>
/// Checks of values that parse but cannot give a meaningful result: NaN or infinite weights and samples (every
/// sensitivity and every distance would be NaN, and the search would choose at random), and labels that name no
/// class of the model. They run before any stage computes with the values.
/// </summary>
internal static class InputChecks
{
    /// <summary>
    /// What must hold before the Hessian engine sees a model: ONNX Runtime loads it and runs it on the first
    /// calibration sample (libtorch aborts the process on some shape errors instead of raising one), the samples
    /// are finite, and the labels name classes of the model.
    /// </summary>
    public static void RequireRunnable(byte[] model, DataFile? calibration, string? output, string modelPath)
    {
        var probe = Evaluation.ModelEvaluator.Check(model, calibration, output, modelPath);
        if (calibration is not null)
        {
            RequireFinite(calibration);
            RequireLabelsInRange(calibration, probe!.Classes);
        }
    }

    /// <summary>Every weight of a tensor is finite.</summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.NonFiniteValues"/> naming the tensor and the first bad element.</exception>
    public static void RequireFinite(ReadOnlySpan<float> values, string tensor, string modelPath)
    {
        var bad = IndexOfNonFinite(values);
        if (bad >= 0)
        {
            throw new QuantException(ErrorCode.NonFiniteValues,
                string.Create(CultureInfo.InvariantCulture,
                    $"Tensor '{tensor}' holds {values[bad]} at element {bad}; weights must be finite numbers. The model was saved from a diverged training run or is damaged."),
                new SourceLocation(modelPath));
        }
    }

    /// <summary>Every float array of a data file is finite.</summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.NonFiniteValues"/> naming the array and the first bad element.</exception>
    public static void RequireFinite(DataFile data)
    {
        ArgumentNullException.ThrowIfNull(data);
        foreach (var name in data.ArrayNames)
        {
            if (data.Get(name).Floats is not { } floats)
            {
                continue;
            }

            var bad = IndexOfNonFinite(floats);
            if (bad >= 0)
            {
                throw new QuantException(ErrorCode.NonFiniteValues,
                    string.Create(CultureInfo.InvariantCulture,
                        $"Array '{name}' of '{data.Path}' holds {floats[bad]} at element {bad}; samples must be finite numbers. Check the preprocessing that wrote the file."),
                    new SourceLocation(data.Path));
            }
        }
    }

    /// <summary>Every label is a class of a model with <paramref name="classes"/> outputs per sample.</summary>
    /// <exception cref="QuantException"><see cref="ErrorCode.LabelOutOfRange"/> naming the first bad label.</exception>
    public static void RequireLabelsInRange(DataFile data, int classes)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Labels() is not { } labels)
        {
            return;
        }

        for (var i = 0; i < labels.Length; i++)
        {
            if (labels[i] < 0 || labels[i] >= classes)
            {
                throw new QuantException(ErrorCode.LabelOutOfRange,
                    string.Create(CultureInfo.InvariantCulture,
                        $"Array 'label' of '{data.Path}' holds {labels[i]} at sample {i}, but the model has {classes} classes (labels 0 to {classes - 1}). Check that the labels belong to this model, or leave them out for label-free analysis."),
                    new SourceLocation(data.Path));
            }
        }
    }

    private static int IndexOfNonFinite(ReadOnlySpan<float> values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return -1;
    }
}
