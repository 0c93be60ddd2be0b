namespace QuantTasks.Coding;

/// <summary>Writes bit fields least significant bit first, the order the runtime's decoder reads.</summary>
internal sealed class BitWriter
{
    private readonly List<byte> _bytes;
    private ulong _buffer;
    private int _count;

    public BitWriter(int capacity = 0)
    {
        _bytes = new List<byte>(capacity);
    }

    /// <summary>Appends the low <paramref name="length"/> bits of <paramref name="bits"/> (at most 32).</summary>
    public void Write(uint bits, int length)
    {
        _buffer |= (ulong)bits << _count;
        _count += length;
        while (_count >= 8)
        {
            _bytes.Add((byte)_buffer);
            _buffer >>= 8;
            _count -= 8;
        }
    }

    /// <summary>The bytes written, the last one padded with zero bits.</summary>
    public byte[] ToArray()
    {
        var result = new byte[_bytes.Count + (_count > 0 ? 1 : 0)];
        _bytes.CopyTo(result);
        if (_count > 0)
        {
            result[^1] = (byte)_buffer;
        }

        return result;
    }
}
