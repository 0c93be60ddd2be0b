using QuantTasks.Onnx;
using QuantTasks.Onnx.Proto;
using static TorchSharp.torch;
using DataType = QuantTasks.Onnx.Proto.TensorProto.Types.DataType;

namespace QuantTasks.Engine.Graph;

/// <summary>
/// ONNX tensors and types in TorchSharp. Floating-point data is computed in float32 whatever its stored width
/// (the analysis wants float32 precision, and libtorch's CPU half-precision kernels are incomplete); integer
/// and boolean data keep their types, since shapes and indices are computed with them.
/// </summary>
internal static class TorchTensors
{
    /// <summary>The torch type that computes an ONNX type.</summary>
    public static ScalarType? ScalarTypeOf(long onnxType) => (DataType)onnxType switch
    {
        DataType.Float or DataType.Float16 or DataType.Bfloat16 or DataType.Double => ScalarType.Float32,
        DataType.Int64 or DataType.Uint32 or DataType.Uint64 => ScalarType.Int64,
        DataType.Int32 => ScalarType.Int32,
        DataType.Int16 => ScalarType.Int16,
        DataType.Int8 => ScalarType.Int8,
        DataType.Uint8 => ScalarType.Byte,
        DataType.Bool => ScalarType.Bool,
        _ => null,
    };

    /// <summary>A stored tensor as a torch tensor on <paramref name="device"/>.</summary>
    public static Tensor FromProto(TensorProto proto, Device device)
    {
        var type = ScalarTypeOf(proto.DataType)
            ?? throw new ArgumentException($"Tensor '{proto.Name}' has data type {(DataType)proto.DataType}, which the executor does not compute.", nameof(proto));
        var shape = proto.Dims.ToArray();
        Tensor result;
        if (type == ScalarType.Float32)
        {
            result = tensor(TensorValues.ReadAsFloat(proto), shape, ScalarType.Float32);
        }
        else
        {
            result = tensor(TensorValues.ReadAsInt64(proto), shape, ScalarType.Int64).to(type);
        }

        return result.to(device);
    }
}
