using QuantTasks.Engine.Native;
using QuantTasks.Policy;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuantTasks.Engine.Training;

/// <summary>
/// An optimizer over fine-tuning's parameters, with PyTorch's update rules written out here: the update is part
/// of the product's training loop, so its arithmetic is fixed by this code (and a test holds a step to a
/// hand-computed one), not by a binding's version. Every step runs in place, without building a graph.
/// </summary>
internal abstract class ParameterOptimizer : IDisposable
{
    protected ParameterOptimizer(IReadOnlyList<Parameter> parameters, double learningRate)
    {
        Parameters = parameters;
        LearningRate = learningRate;
    }

    /// <summary>The parameters it updates.</summary>
    protected IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>The step size of the next steps (the schedule sets it every epoch).</summary>
    public double LearningRate { get; set; }

    /// <summary>The optimizer the policy names.</summary>
    public static ParameterOptimizer For(FinetuneOptions options, IReadOnlyList<Parameter> parameters)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Optimizer == FinetuneOptimizer.Sgd
            ? new MomentumSgd(parameters, options.LearningRate, options.Momentum)
            : new Adam(parameters, options.LearningRate);
    }

    /// <summary>Forgets the gradients of the last step.</summary>
    public void ZeroGradients()
    {
        foreach (var p in Parameters)
        {
            p.grad?.zero_();
        }
    }

    /// <summary>True when every gradient of the last backward pass is finite.</summary>
    public bool GradientsFinite() => TransientNaN.AllFinite(Parameters.Select(p => p.grad).OfType<Tensor>());

    /// <summary>Updates every parameter that has a gradient.</summary>
    public void Step()
    {
        using var _ = no_grad();
        for (var i = 0; i < Parameters.Count; i++)
        {
            if (Parameters[i].grad is { } gradient)
            {
                Update(i, Parameters[i], gradient);
            }
        }
    }

    /// <summary>One parameter's update from its gradient.</summary>
    protected abstract void Update(int index, Parameter parameter, Tensor gradient);

    public abstract void Dispose();

    /// <summary>
    /// Adam (Kingma and Ba) with PyTorch's defaults (beta1 0.9, beta2 0.999, epsilon 1e-8) and bias correction:
    /// p -= rate m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + epsilon).
    /// </summary>
    private sealed class Adam : ParameterOptimizer
    {
        private const double Beta1 = 0.9;
        private const double Beta2 = 0.999;
        private const double Epsilon = 1e-8;

        // Made once and kept: temporaries that the garbage collector finalizes while libtorch reads them are
        // the suspected cause of a rare corrupt-scalar failure (see LibTorch.One).
        private readonly Scalar _beta1 = Beta1.ToScalar();
        private readonly Scalar _beta2 = Beta2.ToScalar();
        private readonly Scalar _oneMinusBeta1 = (1 - Beta1).ToScalar();
        private readonly Scalar _oneMinusBeta2 = (1 - Beta2).ToScalar();
        private readonly Scalar _epsilon = Epsilon.ToScalar();
        private readonly Tensor[] _first;
        private readonly Tensor[] _second;
        private readonly int[] _steps;

        public Adam(IReadOnlyList<Parameter> parameters, double learningRate)
            : base(parameters, learningRate)
        {
            _first = parameters.Select(p => zeros_like(p)).ToArray();
            _second = parameters.Select(p => zeros_like(p)).ToArray();
            _steps = new int[parameters.Count];
        }

        protected override void Update(int index, Parameter parameter, Tensor gradient)
        {
            var t = ++_steps[index];
            var m = _first[index];
            var v = _second[index];
            m.mul_(_beta1).add_(gradient, alpha: _oneMinusBeta1);
            v.mul_(_beta2).addcmul_(gradient, gradient, value: _oneMinusBeta2);
            using var secondCorrection = (1 - Math.Pow(Beta2, t)).ToScalar();
            using var stepSize = (-LearningRate / (1 - Math.Pow(Beta1, t))).ToScalar();
            using var denominator = v.div(secondCorrection).sqrt_().add_(_epsilon, LibTorch.One);
            parameter.addcdiv_(m, denominator, value: stepSize);
            GC.KeepAlive(secondCorrection);
            GC.KeepAlive(stepSize);
        }

        public override void Dispose()
        {
            foreach (var t in _first.Concat(_second))
            {
                t.Dispose();
            }

            foreach (var s in new[] { _beta1, _beta2, _oneMinusBeta1, _oneMinusBeta2, _epsilon })
            {
                s.Dispose();
            }
        }
    }

    /// <summary>SGD with momentum as PyTorch defines it: b = g on the first step, then b = mu b + g; p -= rate b.</summary>
    private sealed class MomentumSgd : ParameterOptimizer
    {
        private readonly double _momentum;
        private readonly Scalar _momentumScalar;
        private readonly Tensor?[] _buffers;

        public MomentumSgd(IReadOnlyList<Parameter> parameters, double learningRate, double momentum)
            : base(parameters, learningRate)
        {
            _momentum = momentum;
            _momentumScalar = momentum.ToScalar();
            _buffers = new Tensor?[parameters.Count];
        }

        protected override void Update(int index, Parameter parameter, Tensor gradient)
        {
            var step = gradient;
            if (_momentum > 0)
            {
                var buffer = _buffers[index];
                if (buffer is null)
                {
                    // Kept across steps, so out of the batch's dispose scope.
                    _buffers[index] = buffer = gradient.clone().DetachFromDisposeScope();
                }
                else
                {
                    buffer.mul_(_momentumScalar).add_(gradient, LibTorch.One);
                }

                step = buffer;
            }

            using var rate = (-LearningRate).ToScalar();
            parameter.add_(step, alpha: rate);
            GC.KeepAlive(rate);
        }

        public override void Dispose()
        {
            foreach (var b in _buffers)
            {
                b?.Dispose();
            }

            _momentumScalar.Dispose();
        }
    }
}
