namespace QuantTasks.Evaluation;

/// <summary>
/// A loss increase measured with weight tensors replaced: what <c>omega: measured</c> and
/// <c>calibrated-output-error</c> ask of a forward pass (<see cref="MeasuredLoss"/> by ONNX Runtime; a function in tests).
/// </summary>
internal interface ILossMeasurement
{
    /// <summary>The loss with tensor <paramref name="name"/> replaced by <paramref name="values"/>, minus the float model's.</summary>
    double Increase(string name, float[] values);

    /// <summary>
    /// For <paramref name="runs"/> candidates of one tensor in a row: an implementation may prepare once what every
    /// candidate shares. By default each candidate is measured like <see cref="Increase"/>.
    /// </summary>
    ICandidateProbe Probe(string name, int runs) => new EachAlone(this, name);

    private sealed class EachAlone(ILossMeasurement owner, string name) : ICandidateProbe
    {
        public double Increase(float[] values) => owner.Increase(name, values);

        public void Dispose()
        {
        }
    }
}

/// <summary>Measures the candidates of one tensor, one after another; disposing it frees what they shared.</summary>
internal interface ICandidateProbe : IDisposable
{
    /// <summary>The loss with the tensor replaced by <paramref name="values"/>, minus the float model's.</summary>
    double Increase(float[] values);
}

/// <summary>A loss measurement given as a function of the tensor's name and values.</summary>
internal sealed class LossFunction(Func<string, float[], double> increase) : ILossMeasurement
{
    public double Increase(string name, float[] values) => increase(name, values);
}
