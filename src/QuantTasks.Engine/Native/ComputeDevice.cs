using QuantTasks.Diagnostics;
using QuantTasks.Policy;
using TorchSharp;

namespace QuantTasks.Engine.Native;

/// <summary>Where TorchSharp work runs, from a policy's <c>device</c> key.</summary>
internal static class ComputeDevice
{
    /// <summary>CUDA when asked for or (auto) when TorchSharp reports it; the CPU otherwise.</summary>
    /// <param name="kind">The policy's value.</param>
    /// <param name="policyKey">The key it came from, for the error (<c>sensitivity.device</c>).</param>
    /// <param name="work">What runs there, for the note (<c>the Hessian analysis</c>).</param>
    /// <param name="note">Hears that auto fell back to the CPU.</param>
    /// <exception cref="QuantException"><see cref="ErrorCode.CudaUnavailable"/> for cuda without a CUDA device.</exception>
    public static torch.Device Select(DeviceKind kind, string policyKey, string work, Action<string>? note)
    {
        var cuda = torch.cuda.is_available();
        switch (kind)
        {
            case DeviceKind.Cuda when !cuda:
                throw new QuantException(ErrorCode.CudaUnavailable,
                    $"{policyKey} is cuda, but TorchSharp reports no CUDA device (this build of QuantTasks uses TorchSharp-cpu, or no GPU driver is loaded). Use device: auto or cpu.");
            case DeviceKind.Cuda:
                return torch.CUDA;
            case DeviceKind.Auto when cuda:
                return torch.CUDA;
            case DeviceKind.Auto:
                note?.Invoke($"CUDA is not available; {work} runs on the CPU.");
                return torch.CPU;
            default:
                return torch.CPU;
        }
    }
}
