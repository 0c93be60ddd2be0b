using System;
using System.Buffers.Binary;

namespace QuantTasks.Runtime;

/// <summary>Little-endian floats for every target: netstandard2.0's BinaryPrimitives has only the integer forms.</summary>
internal static unsafe class LittleEndian
{
    public static float ReadSingle(ReadOnlySpan<byte> source)
    {
        var bits = BinaryPrimitives.ReadInt32LittleEndian(source);
        return *(float*)&bits;
    }

    public static void WriteSingle(Span<byte> target, float value) =>
        BinaryPrimitives.WriteInt32LittleEndian(target, *(int*)&value);

    public static void WriteDouble(Span<byte> target, double value) =>
        BinaryPrimitives.WriteInt64LittleEndian(target, *(long*)&value);

    public static uint SingleBits(float value) => *(uint*)&value;
}
