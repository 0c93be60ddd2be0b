using System;

namespace QuantTasks.Runtime;

/// <summary>
/// A blob that cannot be used: not a QuantTasks blob, truncated, corrupt (a checksum fails), internally
/// inconsistent, or written by a newer format version. The message says which, and what was expected.
/// A reader never returns wrong weights instead of throwing this.
/// </summary>
public sealed class QuantBlobException : Exception
{
    /// <summary>Creates the exception with the reason.</summary>
    public QuantBlobException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with the reason and the lower-level failure.</summary>
    public QuantBlobException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with no reason (for serializers; prefer the other constructors).</summary>
    public QuantBlobException()
        : base("The QuantTasks blob is invalid.")
    {
    }
}
