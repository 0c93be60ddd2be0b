namespace QuantTasks.Diagnostics;

/// <summary>
/// Every error QuantTasks reports, printed as <c>QTnnnn</c>. The thousands digit is the exit code of the
/// command line (1 bad input or usage, 2 accuracy gate failed, 3 internal error), so a code alone tells CI
/// what kind of failure it saw. <c>docs/errors.md</c> explains each one; a test keeps the two in step.
/// </summary>
internal enum ErrorCode
{
    /// <summary>The command line itself is wrong: an unknown option, a missing argument.</summary>
    Usage = 1001,

    /// <summary>A file the command was given does not exist.</summary>
    FileNotFound = 1002,

    /// <summary>An output file exists and the command was not told to replace it.</summary>
    OutputExists = 1003,

    /// <summary>A file could not be read or written (permissions, a directory in its place).</summary>
    FileAccess = 1004,

    /// <summary>A file named as input is a pipe, socket, device or folder rather than a regular file.</summary>
    NotARegularFile = 1005,

    /// <summary>An input is larger than QuantTasks reads (a policy over its size or alias limit, a data archive that expands beyond reason).</summary>
    InputTooLarge = 1006,

    /// <summary>A folder given as the cache is not one QuantTasks made; nothing in it was removed.</summary>
    NotACache = 1007,

    /// <summary>A warning: the remote cache could not be asked or filled (down, refused, slow, an HTTP error); the model is computed here.</summary>
    RemoteCacheUnavailable = 1009,

    /// <summary>A warning: an entry from the remote cache failed its checksum or key check; it is not used and the model is computed here.</summary>
    RemoteCacheEntryRejected = 1010,

    /// <summary>The policy is not well-formed YAML (including a tab used for indentation).</summary>
    PolicySyntax = 1101,

    /// <summary>The policy has a key the schema does not define.</summary>
    PolicyUnknownKey = 1102,

    /// <summary>A policy value has the wrong type (a list where a map belongs, text where a number belongs).</summary>
    PolicyWrongType = 1103,

    /// <summary>A policy value is outside its allowed range or set.</summary>
    PolicyInvalidValue = 1104,

    /// <summary>The size budget names none or more than one of its forms.</summary>
    PolicyBudget = 1105,

    /// <summary>A file the policy names does not exist.</summary>
    PolicyMissingFile = 1106,

    /// <summary>A required policy key is missing.</summary>
    PolicyMissingKey = 1107,

    /// <summary>The policy breaks a rule of the schema not covered by a more specific code.</summary>
    PolicySchema = 1108,

    /// <summary>The file is not an ONNX model, or is truncated.</summary>
    OnnxUnreadable = 1201,

    /// <summary>An external-data location points outside the model's folder.</summary>
    OnnxExternalDataOutsideFolder = 1202,

    /// <summary>An external-data file is missing or shorter than the model says.</summary>
    OnnxExternalDataMissing = 1203,

    /// <summary>A tensor's stored data does not match the size its shape and type call for.</summary>
    OnnxTensorSizeMismatch = 1204,

    /// <summary>A tensor has a data type or storage form QuantTasks does not read.</summary>
    OnnxUnsupportedTensor = 1205,

    /// <summary>The model's structure is invalid (no graph, a node input nobody produces).</summary>
    OnnxInvalidModel = 1206,

    /// <summary>The model uses operators (or attribute values) the Hessian analysis does not run.</summary>
    UnsupportedOperator = 1207,

    /// <summary>A weight tensor or a data array holds NaN or an infinity.</summary>
    NonFiniteValues = 1208,

    /// <summary>A data file is not a valid .npy or .npz file.</summary>
    DataUnreadable = 1301,

    /// <summary>A data file lacks an array the model needs.</summary>
    DataMissingArray = 1302,

    /// <summary>A data array has a dtype QuantTasks does not accept there.</summary>
    DataWrongType = 1303,

    /// <summary>A data array is truncated: it stores fewer bytes than its shape declares.</summary>
    DataTruncated = 1304,

    /// <summary>A data array's layout is not supported (Fortran order, big-endian).</summary>
    DataUnsupportedLayout = 1305,

    /// <summary>A label names no class of the model (negative, or not below the number of outputs).</summary>
    LabelOutOfRange = 1306,

    /// <summary>CUDA was asked for and TorchSharp reports none.</summary>
    CudaUnavailable = 1402,

    /// <summary>The build could not restore the packages the engine needs (reported by the MSBuild task).</summary>
    EngineDependenciesUnavailable = 1403,

    /// <summary>A file given as a blob is not a valid QuantTasks blob: corrupt, truncated or of a newer format.</summary>
    BlobInvalid = 1501,

    /// <summary>No choice of bit widths fits the size budget; the message names the smallest reachable size.</summary>
    BudgetInfeasible = 1601,

    /// <summary>A quantizer needs an input the policy does not provide (the Hessian diagonal for hessian-kmeans).</summary>
    QuantizerNeedsHessian = 1602,

    /// <summary>The analysis found no tensor the loss reacts to (every sensitivity near zero or negative): nothing to rank bits by.</summary>
    SensitivityDegenerate = 1603,

    /// <summary>The Hessian analysis gave a NaN or infinite estimate although the model's outputs are finite.</summary>
    HessianNotFinite = 1604,

    /// <summary>libtorch, the Hessian engine's native library, cannot be loaded on this machine.</summary>
    TorchUnavailable = 1401,

    /// <summary>The quantized model lost more accuracy than the policy's max_drop allows.</summary>
    AccuracyGateFailed = 2001,

    /// <summary>A warning: the policy names no evaluation data, so no accuracy gate protects the model (the report gives its fidelity on the calibration samples).</summary>
    AccuracyUngated = 2002,

    /// <summary>A bug in QuantTasks; the message says what to report.</summary>
    Internal = 3001,

    /// <summary>The QuantTasks package is incomplete: its engine is missing (reported by the MSBuild task).</summary>
    EngineMissing = 3002,

    /// <summary>The engine's manifest in obj/ holds a line this task does not understand (a warning; the engine runs again).</summary>
    ManifestUnreadable = 3003,
}

/// <summary>Exit codes of the <c>dotnet quant</c> command line, as the product contract defines them.</summary>
internal enum ExitCode
{
    /// <summary>Everything worked.</summary>
    Success = 0,

    /// <summary>Bad input or usage.</summary>
    BadInput = 1,

    /// <summary>The accuracy gate failed.</summary>
    AccuracyGateFailed = 2,

    /// <summary>An internal error.</summary>
    Internal = 3,
}

/// <summary>Formatting and classification of <see cref="ErrorCode"/> values.</summary>
internal static class ErrorCodes
{
    /// <summary>
    /// A warning line in MSBuild's canonical form (<c>origin: warning QTnnnn: text</c>): the build shows it as a
    /// warning when the engine prints it, and a terminal user reads it as one.
    /// </summary>
    public static string Warning(this ErrorCode code, string message, string origin = "QuantTasks") =>
        $"{origin}: warning {code.Format()}: {message}";

    /// <summary>The printed form, such as <c>QT1102</c>.</summary>
    public static string Format(this ErrorCode code) =>
        "QT" + ((int)code).ToString("D4", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The exit code an error of this code ends the command line with.</summary>
    public static ExitCode ExitCode(this ErrorCode code) => ((int)code / 1000) switch
    {
        1 => Diagnostics.ExitCode.BadInput,
        2 => Diagnostics.ExitCode.AccuracyGateFailed,
        _ => Diagnostics.ExitCode.Internal,
    };
}
