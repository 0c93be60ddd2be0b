using System.Buffers.Binary;
using Google.Protobuf;
using QuantTasks.Diagnostics;
using QuantTasks.Onnx.Proto;
using DataType = QuantTasks.Onnx.Proto.TensorProto.Types.DataType;

namespace QuantTasks.Onnx;

/// <summary>
/// Reads a tensor's elements as float32 whatever its stored type and encoding (<c>raw_data</c> or the typed
/// fields), and writes float32 values back in the tensor's own type. Every read checks that the stored size
/// matches the shape, so a damaged model fails here with the tensor's name rather than later with wrong weights.
/// </summary>
internal static class TensorValues
{
    /// <summary>Bytes per element of a fixed-width type, or 0 for types QuantTasks does not read.</summary>
    public static int ElementSize(int dataType) => (DataType)dataType switch
    {
        DataType.Float or DataType.Int32 or DataType.Uint32 => 4,
        DataType.Double or DataType.Int64 or DataType.Uint64 => 8,
        DataType.Float16 or DataType.Bfloat16 or DataType.Int16 or DataType.Uint16 => 2,
        DataType.Int8 or DataType.Uint8 or DataType.Bool => 1,
        _ => 0,
    };

    /// <summary>Whether the type is a floating-point type (the only ones that hold quantizable weights).</summary>
    public static bool IsFloatingPoint(int dataType) =>
        (DataType)dataType is DataType.Float or DataType.Float16 or DataType.Bfloat16 or DataType.Double;

    /// <summary>The number of elements the shape calls for.</summary>
    /// <exception cref="QuantException">A dimension is negative or the count overflows.</exception>
    public static long ElementCount(TensorProto tensor)
    {
        long count = 1;
        foreach (var dim in tensor.Dims)
        {
            if (dim < 0)
            {
                throw new QuantException(ErrorCode.OnnxTensorSizeMismatch,
                    $"Tensor '{tensor.Name}' has a negative dimension in shape {ShapeText(tensor)}. The model is damaged; export it again.");
            }

            try
            {
                count = checked(count * dim);
            }
            catch (OverflowException e)
            {
                throw new QuantException(ErrorCode.OnnxTensorSizeMismatch,
                    $"Tensor '{tensor.Name}' has shape {ShapeText(tensor)}, too many elements to store. The model is damaged.", null, e);
            }
        }

        return count;
    }

    /// <summary>The shape as text, such as <c>[6, 1, 5, 5]</c>.</summary>
    public static string ShapeText(TensorProto tensor) => "[" + string.Join(", ", tensor.Dims) + "]";

    /// <summary>
    /// Checks that a fixed-width tensor stores exactly as many bytes or values as its shape calls for; tensors of
    /// other types (strings, 4-bit and 8-bit floats) are left to the consumers that read them.
    /// </summary>
    /// <exception cref="QuantException">The stored size disagrees with the shape.</exception>
    public static void CheckStoredSize(TensorProto tensor)
    {
        var size = ElementSize(tensor.DataType);
        if (size == 0)
        {
            return;
        }

        var count = ElementCount(tensor);
        if (count > long.MaxValue / size)
        {
            // Counted in bytes such a shape would wrap around to a small number, even to 0 for [2^31, 2^31].
            throw SizeMismatch(tensor, count, tensor.HasRawData ? $"{tensor.RawData.Length} bytes of raw_data" : "far fewer values", "more bytes than a file can hold");
        }

        if (tensor.HasRawData)
        {
            if (tensor.RawData.Length != count * size)
            {
                throw SizeMismatch(tensor, count, $"{tensor.RawData.Length} bytes of raw_data", count * size + " bytes");
            }

            return;
        }

        var (stored, field) = (DataType)tensor.DataType switch
        {
            DataType.Float => (tensor.FloatData.Count, "float_data"),
            DataType.Double => (tensor.DoubleData.Count, "double_data"),
            DataType.Int64 => (tensor.Int64Data.Count, "int64_data"),
            DataType.Uint32 or DataType.Uint64 => (tensor.Uint64Data.Count, "uint64_data"),
            _ => (tensor.Int32Data.Count, "int32_data"),
        };
        if (stored != count)
        {
            throw SizeMismatch(tensor, count, $"{stored} values in {field}", count + " values");
        }
    }

    /// <summary>Reads every element as float32, in C order.</summary>
    /// <exception cref="QuantException">The stored size disagrees with the shape, or the type is not readable.</exception>
    public static float[] ReadAsFloat(TensorProto tensor)
    {
        var count = ElementCount(tensor);
        if (count > Array.MaxLength)
        {
            throw new QuantException(ErrorCode.OnnxUnsupportedTensor,
                $"Tensor '{tensor.Name}' has {count} elements; more than {Array.MaxLength} in one tensor is not supported.");
        }

        if (tensor.Segment is not null)
        {
            throw new QuantException(ErrorCode.OnnxUnsupportedTensor,
                $"Tensor '{tensor.Name}' is stored in segments, which ONNX no longer uses; QuantTasks does not read them. Save the model again with the onnx package.");
        }

        var n = (int)count;
        var type = (DataType)tensor.DataType;
        var size = ElementSize(tensor.DataType);
        if (size == 0)
        {
            throw new QuantException(ErrorCode.OnnxUnsupportedTensor,
                $"Tensor '{tensor.Name}' has data type {type}, which QuantTasks does not read (float32, float16, bfloat16, double and the integer types are supported).");
        }

        var values = new float[n];
        if (tensor.HasRawData)
        {
            var raw = tensor.RawData.Span;
            if (raw.Length != (long)n * size)
            {
                throw SizeMismatch(tensor, n, $"{raw.Length} bytes of raw_data", (long)n * size + " bytes");
            }

            DecodeRaw(raw, type, values);
            return values;
        }

        // The typed fields, per the ONNX specification of which field holds which type.
        switch (type)
        {
            case DataType.Float:
                CheckCount(tensor, n, tensor.FloatData.Count, "float_data");
                tensor.FloatData.CopyTo(values, 0);
                break;
            case DataType.Double:
                CheckCount(tensor, n, tensor.DoubleData.Count, "double_data");
                for (var i = 0; i < n; i++)
                {
                    values[i] = (float)tensor.DoubleData[i];
                }

                break;
            case DataType.Int64:
                CheckCount(tensor, n, tensor.Int64Data.Count, "int64_data");
                for (var i = 0; i < n; i++)
                {
                    values[i] = tensor.Int64Data[i];
                }

                break;
            case DataType.Uint32 or DataType.Uint64:
                CheckCount(tensor, n, tensor.Uint64Data.Count, "uint64_data");
                for (var i = 0; i < n; i++)
                {
                    values[i] = tensor.Uint64Data[i];
                }

                break;
            default:
                // int32_data holds every narrower type, one element per entry; half types as their bit patterns.
                CheckCount(tensor, n, tensor.Int32Data.Count, "int32_data");
                for (var i = 0; i < n; i++)
                {
                    values[i] = type switch
                    {
                        DataType.Float16 => (float)BitConverter.UInt16BitsToHalf((ushort)tensor.Int32Data[i]),
                        DataType.Bfloat16 => BitConverter.Int32BitsToSingle(tensor.Int32Data[i] << 16),
                        _ => tensor.Int32Data[i],
                    };
                }

                break;
        }

        return values;
    }

    /// <summary>
    /// Reads every element of an integer or boolean tensor as int64, exactly (shapes, indices, axes).
    /// Floating-point tensors are truncated toward zero.
    /// </summary>
    /// <exception cref="QuantException">The stored size disagrees with the shape, or the type is not readable.</exception>
    public static long[] ReadAsInt64(TensorProto tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var type = (DataType)tensor.DataType;
        if (IsFloatingPoint(tensor.DataType))
        {
            return ReadAsFloat(tensor).Select(v => (long)v).ToArray();
        }

        CheckStoredSize(tensor);
        var n = (int)ElementCount(tensor);
        var size = ElementSize(tensor.DataType);
        if (size == 0)
        {
            throw new QuantException(ErrorCode.OnnxUnsupportedTensor,
                $"Tensor '{tensor.Name}' has data type {type}, which QuantTasks does not read as integers.");
        }

        var values = new long[n];
        if (tensor.HasRawData)
        {
            var raw = tensor.RawData.Span;
            for (var i = 0; i < n; i++)
            {
                values[i] = type switch
                {
                    DataType.Int8 => (sbyte)raw[i],
                    DataType.Uint8 or DataType.Bool => raw[i],
                    DataType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(raw[(i * 2)..]),
                    DataType.Uint16 => BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]),
                    DataType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(raw[(i * 4)..]),
                    DataType.Uint32 => BinaryPrimitives.ReadUInt32LittleEndian(raw[(i * 4)..]),
                    _ => BinaryPrimitives.ReadInt64LittleEndian(raw[(i * 8)..]),
                };
            }

            return values;
        }

        for (var i = 0; i < n; i++)
        {
            values[i] = type switch
            {
                DataType.Int64 => tensor.Int64Data[i],
                DataType.Uint32 or DataType.Uint64 => (long)tensor.Uint64Data[i],
                _ => tensor.Int32Data[i],
            };
        }

        return values;
    }

    /// <summary>
    /// Replaces the tensor's elements with <paramref name="values"/> (C order), stored as <c>raw_data</c> in the
    /// tensor's own data type; the shape and type stay as they are.
    /// </summary>
    public static void Write(TensorProto tensor, ReadOnlySpan<float> values)
    {
        var count = ElementCount(tensor);
        if (values.Length != count)
        {
            throw new ArgumentException($"Tensor '{tensor.Name}' has {count} elements; {values.Length} values were given.", nameof(values));
        }

        var type = (DataType)tensor.DataType;
        var size = ElementSize(tensor.DataType);
        if (size == 0 || !IsFloatingPoint(tensor.DataType))
        {
            throw new QuantException(ErrorCode.OnnxUnsupportedTensor,
                $"Tensor '{tensor.Name}' has data type {type}; only floating-point tensors get new weights.");
        }

        var bytes = new byte[values.Length * size];
        for (var i = 0; i < values.Length; i++)
        {
            var slot = bytes.AsSpan(i * size);
            switch (type)
            {
                case DataType.Float:
                    BinaryPrimitives.WriteSingleLittleEndian(slot, values[i]);
                    break;
                case DataType.Double:
                    BinaryPrimitives.WriteDoubleLittleEndian(slot, values[i]);
                    break;
                case DataType.Float16:
                    BinaryPrimitives.WriteHalfLittleEndian(slot, (Half)values[i]);
                    break;
                default:
                    BinaryPrimitives.WriteUInt16LittleEndian(slot, ToBfloat16(values[i]));
                    break;
            }
        }

        tensor.FloatData.Clear();
        tensor.DoubleData.Clear();
        tensor.Int32Data.Clear();
        tensor.Int64Data.Clear();
        tensor.Uint64Data.Clear();
        tensor.RawData = ByteString.CopyFrom(bytes);
    }

    private static void DecodeRaw(ReadOnlySpan<byte> raw, DataType type, Span<float> values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = type switch
            {
                DataType.Float => BinaryPrimitives.ReadSingleLittleEndian(raw[(i * 4)..]),
                DataType.Double => (float)BinaryPrimitives.ReadDoubleLittleEndian(raw[(i * 8)..]),
                DataType.Float16 => (float)BinaryPrimitives.ReadHalfLittleEndian(raw[(i * 2)..]),
                DataType.Bfloat16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]) << 16),
                DataType.Int8 => (sbyte)raw[i],
                DataType.Uint8 or DataType.Bool => raw[i],
                DataType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(raw[(i * 2)..]),
                DataType.Uint16 => BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]),
                DataType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(raw[(i * 4)..]),
                DataType.Uint32 => BinaryPrimitives.ReadUInt32LittleEndian(raw[(i * 4)..]),
                DataType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(raw[(i * 8)..]),
                DataType.Uint64 => BinaryPrimitives.ReadUInt64LittleEndian(raw[(i * 8)..]),
                _ => throw new InvalidOperationException($"Unhandled type {type}."),
            };
        }
    }

    // Round to nearest even, as PyTorch and ONNX Runtime convert; NaN stays NaN.
    private static ushort ToBfloat16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x40);
        }

        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    private static void CheckCount(TensorProto tensor, int expected, int actual, string field)
    {
        if (actual != expected)
        {
            throw SizeMismatch(tensor, expected, $"{actual} values in {field}", expected + " values");
        }
    }

    private static QuantException SizeMismatch(TensorProto tensor, long elements, string stored, string needed) =>
        new(ErrorCode.OnnxTensorSizeMismatch,
            $"Tensor '{tensor.Name}' has shape {ShapeText(tensor)} ({elements} elements of {(DataType)tensor.DataType}, {needed}) but stores {stored}. The model is damaged; export it again.");
}
