namespace QuantTasks.Data;

/// <summary>The element types QuantTasks accepts in data files.</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "Named after the NumPy dtypes they stand for.")]
internal enum NpyDType
{
    /// <summary>Little-endian float32 (<c>&lt;f4</c>): model inputs.</summary>
    Float32,

    /// <summary>Little-endian int32 (<c>&lt;i4</c>): labels.</summary>
    Int32,

    /// <summary>Little-endian int64 (<c>&lt;i8</c>): labels.</summary>
    Int64,
}

/// <summary>
/// One array of a <c>.npy</c> file or <c>.npz</c> member, in C order. Floats are in <see cref="Floats"/>; integers
/// are widened to int64 in <see cref="Integers"/>.
/// </summary>
internal sealed class NpyArray
{
    internal NpyArray(string name, NpyDType dtype, long[] shape, float[]? floats, long[]? integers)
    {
        Name = name;
        DType = dtype;
        Shape = shape;
        Floats = floats;
        Integers = integers;
    }

    /// <summary>The array's name (the .npz member without <c>.npy</c>, or the file name for a .npy file).</summary>
    public string Name { get; }

    /// <summary>The stored element type.</summary>
    public NpyDType DType { get; }

    /// <summary>The dimensions, batch first for model data.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The elements of a float32 array, otherwise null.</summary>
    public float[]? Floats { get; }

    /// <summary>The elements of an integer array widened to int64, otherwise null.</summary>
    public long[]? Integers { get; }

    /// <summary>The number of elements.</summary>
    public long Length => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The length of the first axis (samples, for model data); 1 for a scalar.</summary>
    public long Rows => Shape.Count == 0 ? 1 : Shape[0];

    /// <summary>The first <paramref name="rows"/> samples (all of them when there are fewer).</summary>
    public NpyArray Head(long rows)
    {
        if (Shape.Count == 0 || rows >= Rows)
        {
            return this;
        }

        var shape = Shape.ToArray();
        shape[0] = rows;
        var perRow = Rows == 0 ? 0 : Length / Rows;
        var count = checked((int)(perRow * rows));
        return new NpyArray(Name, DType, shape, Floats?[..count], Integers?[..count]);
    }
}
