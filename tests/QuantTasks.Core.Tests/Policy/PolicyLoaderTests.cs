using QuantTasks.Diagnostics;
using QuantTasks.Policy;
using QuantTasks.Tests;

namespace QuantTasks.Core.Tests.Policy;

public sealed class PolicyLoaderTests : IDisposable
{
    private const string Valid = """
        version: 1
        models:
          - path: models/lenet5.onnx
            name: Digits
        data:
          calibration: data/calib.npz
          evaluation: data/test.npz
        quantization:
          method: hessian-kmeans
          bits: [2, 4, 8]
          budget:
            max_size: 16KiB
          overrides:
            - match: "conv1.*"
              bits: 8
        accuracy:
          max_drop: 1
        """;

    private readonly TempFolder _folder = new();

    public PolicyLoaderTests()
    {
        Directory.CreateDirectory(_folder.File("models"));
        Directory.CreateDirectory(_folder.File("data"));
        _folder.Copy(Fixtures.Model("lenet5.onnx"), "models/lenet5.onnx");
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "data/calib.npz");
        _folder.Copy(Fixtures.Data("digits-test.npz"), "data/test.npz");
    }

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void A_valid_policy_binds_with_defaults_for_what_it_leaves_out()
    {
        var loaded = Load(Valid);
        var policy = loaded.Policy;

        Assert.Equal("Digits", policy.Models[0].Name);
        Assert.Equal(_folder.File("models/lenet5.onnx"), loaded.Resolve(policy.Models[0].Path));
        Assert.Equal(QuantizationMethods.HessianKmeans, policy.Quantization.Method);
        Assert.Equal([2, 4, 8], policy.Quantization.Bits);
        Assert.Equal(16 * 1024, policy.Quantization.Budget.MaxSize!.Value.Bytes);
        Assert.Null(policy.Quantization.Budget.CompressionRatio);
        Assert.Equal(8, policy.Quantization.Overrides[0].Bits);
        Assert.Equal(1.0, policy.Accuracy.MaxDrop);
        // Left out, so defaults (the analysis on, since hessian-kmeans uses it; omega and compensation as with calibration data):
        Assert.Equal(SensitivityMethod.Trace, policy.Sensitivity.Method);
        Assert.Equal(OmegaKind.CalibratedOutputError, policy.Quantization.Omega);
        Assert.Equal(CompensationKind.Gptq, policy.Quantization.Compensation);
        Assert.Equal(512, policy.Sensitivity.Samples);
        Assert.Equal(Granularity.Auto, policy.Quantization.Granularity);
        Assert.Equal(["*bias*"], policy.Quantization.KeepFloat);
        Assert.Equal(EntropyCoding.Huffman, policy.Encoding.Entropy);
        Assert.Equal(AccuracyMetric.Top1, policy.Accuracy.Metric);
    }

    [Theory]
    [InlineData("calibrated-output-error", nameof(OmegaKind.CalibratedOutputError))]
    [InlineData("relative-output-error", nameof(OmegaKind.RelativeOutputError))]
    [InlineData("measured", nameof(OmegaKind.Measured))]
    public void Every_omega_the_schema_names_is_read(string name, string kind)
    {
        var expected = Enum.Parse<OmegaKind>(kind);
        var policy = Load(Valid.Replace("  method: hessian-kmeans", "  method: hessian-kmeans\n  omega: " + name, StringComparison.Ordinal)).Policy;

        Assert.Equal(expected, policy.Quantization.Omega);
        Assert.Equal(expected.UsesLayerHessians(), expected is OmegaKind.CalibratedOutputError or OmegaKind.RelativeOutputError);
        Assert.Equal(expected.MeasuresLoss(), expected is OmegaKind.CalibratedOutputError or OmegaKind.Measured);
    }

    [Fact]
    public void A_misspelt_key_is_QT1102_at_its_line_and_column_with_a_suggestion()
    {
        var error = Fails(Valid.Replace("  bits: [2, 4, 8]", "  bitz: [2, 4, 8]", StringComparison.Ordinal));

        Assert.Equal(ErrorCode.PolicyUnknownKey, error.Code);
        Assert.Equal((10, 3), (error.Location!.Line, error.Location.Column));
        Assert.Contains("'bitz'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Did you mean 'bits'?", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_tab_indent_is_QT1101_at_the_tab()
    {
        var error = Fails(Valid.Replace("    name: Digits", "\tname: Digits", StringComparison.Ordinal));

        Assert.Equal(ErrorCode.PolicySyntax, error.Code);
        Assert.Equal((4, 1), (error.Location!.Line, error.Location.Column));
        Assert.Contains("tab", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_list_where_a_map_belongs_is_QT1103()
    {
        var error = Fails("""
            version: 1
            models:
              - path: models/lenet5.onnx
            data:
              - data/calib.npz
            """);

        Assert.Equal(ErrorCode.PolicyWrongType, error.Code);
        Assert.Equal((5, 3), (error.Location!.Line, error.Location.Column));
        Assert.Contains("data must be a map", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("compression_ratio: -4")]
    [InlineData("average_bits: -1")]
    [InlineData("max_size: -100")]
    [InlineData("max_size: 12 furlongs")]
    public void A_negative_or_malformed_budget_is_QT1104(string budget)
    {
        var error = Fails(Valid.Replace("max_size: 16KiB", budget, StringComparison.Ordinal));

        Assert.Equal(ErrorCode.PolicyInvalidValue, error.Code);
        Assert.Equal(12, error.Location!.Line);
    }

    [Theory]
    [InlineData("  omega: relative-output-errors", 10, "relative-output-error")]
    [InlineData("  gptq:\n    clip: maybe", 11, "clip")]
    [InlineData("  gptq:\n    clip: [true]", 11, "clip")]
    [InlineData("  gptq:\n    order: sideways", 11, "order")]
    [InlineData("  gptq:\n    order: [auto]", 11, "order")]
    public void A_wrong_value_for_the_compensation_keys_is_refused_at_its_line(string entry, int line, string expected)
    {
        var error = Fails(Valid.Replace("  method: hessian-kmeans", "  method: hessian-kmeans\n" + entry, StringComparison.Ordinal));

        Assert.True(error.Code is ErrorCode.PolicyInvalidValue or ErrorCode.PolicyWrongType, error.ToString());
        Assert.Equal(line, error.Location!.Line);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("  joint_check:\n    margin: -0.5", 11, "margin")]
    [InlineData("  joint_check:\n    margin: 1e308", 11, "margin")]
    [InlineData("  joint_check:\n    rounds: 1000000", 11, "rounds")]
    [InlineData("  joint_check:\n    rounds: 1.5", 11, "rounds")]
    [InlineData("  joint_check:\n    samples: 0", 11, "samples")]
    [InlineData("  joint_check:\n    enabled: sometimes", 11, "enabled")]
    [InlineData("  joint_check: yes", 10, "joint_check")]
    [InlineData("  joint_check:\n    worst: 3", 11, "worst")]
    [InlineData("  softmax_temperature: 0", 10, "softmax_temperature")]
    [InlineData("  softmax_temperature: -2", 10, "softmax_temperature")]
    [InlineData("  softmax_temperature: 1e308", 10, "softmax_temperature")]
    [InlineData("  softmax_temperature: warm", 10, "softmax_temperature")]
    public void A_hostile_joint_check_or_softmax_temperature_value_is_refused_at_its_line(string entry, int line, string expected)
    {
        var error = Fails(Valid.Replace("  method: hessian-kmeans", "  method: hessian-kmeans\n" + entry, StringComparison.Ordinal));

        Assert.True(error.Code is ErrorCode.PolicyInvalidValue or ErrorCode.PolicyWrongType or ErrorCode.PolicyUnknownKey, error.ToString());
        Assert.Equal(line, error.Location!.Line);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("sketch: -1")]
    [InlineData("sketch: 100000")]
    [InlineData("sketch: 2.5")]
    [InlineData("sketch: lots")]
    public void A_hostile_sketch_rank_is_refused_at_its_line(string entry)
    {
        var error = Fails(Valid.Replace("quantization:\n", "sensitivity:\n  method: trace\n  " + entry + "\nquantization:\n", StringComparison.Ordinal));

        Assert.True(error.Code is ErrorCode.PolicyInvalidValue or ErrorCode.PolicyWrongType, error.ToString());
        Assert.Equal(10, error.Location!.Line);
        Assert.Contains("sketch", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_finetune_section_binds_and_names_the_training_file()
    {
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "data/train.npz");
        var loaded = PolicyLoader.Parse(Valid.Replace("  evaluation: data/test.npz", "  evaluation: data/test.npz\n  training: data/train.npz", StringComparison.Ordinal)
            + "\nfinetune:\n  mode: qat\n  epochs: 4\n  optimizer: sgd\n  loss: distillation\n  temperature: 4\n", _folder.File("quant.yaml"));

        var finetune = loaded.Policy.Finetune!;
        Assert.Equal(FinetuneMode.Qat, finetune.Mode);
        Assert.Equal(4, finetune.Epochs);
        Assert.Equal(FinetuneOptimizer.Sgd, finetune.Optimizer);
        Assert.Equal(FinetuneLoss.Distillation, finetune.Loss);
        Assert.Equal(4, finetune.Temperature);
        Assert.Equal(PolicyDefaults.FinetuneLearningRate, finetune.LearningRate);
        Assert.Equal("data/train.npz", loaded.Policy.Data.Training);
        Assert.Null(PolicyLoader.Parse(Valid, _folder.File("quant.yaml")).Policy.Finetune);
    }

    [Fact]
    public void Finetune_without_training_data_is_refused_at_the_section()
    {
        var error = Fails(Valid + "\nfinetune:\n  epochs: 3\n");

        Assert.Equal(ErrorCode.PolicyMissingKey, error.Code);
        Assert.Equal(19, error.Location!.Line); // the section's first key
        Assert.Contains("data.training", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_training_file_that_does_not_exist_is_refused_at_its_line()
    {
        var error = Fails(Valid.Replace("  evaluation: data/test.npz", "  evaluation: data/test.npz\n  training: data/missing.npz", StringComparison.Ordinal)
            + "\nfinetune: {}\n");

        Assert.Equal(ErrorCode.PolicyMissingFile, error.Code);
        Assert.Equal(8, error.Location!.Line);
    }

    [Fact]
    public void A_training_path_that_is_a_folder_is_refused_at_its_line()
    {
        Directory.CreateDirectory(_folder.File("data/train.npz"));
        var error = Fails(Valid.Replace("  evaluation: data/test.npz", "  evaluation: data/test.npz\n  training: data/train.npz", StringComparison.Ordinal)
            + "\nfinetune: {}\n");

        Assert.Equal(ErrorCode.NotARegularFile, error.Code);
        Assert.Equal(8, error.Location!.Line);
    }

    [Theory]
    [InlineData("  mode: quat", "mode")]
    [InlineData("  learning_rate: 0", "learning_rate")]
    [InlineData("  epochs: 0", "epochs")]
    [InlineData("  validation: 0.9", "validation")]
    [InlineData("  loss: kl", "loss")]
    [InlineData("  order: random", "order")]
    public void A_wrong_finetune_value_is_refused_at_its_line(string entry, string expected)
    {
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "data/train.npz");
        var error = Fails(Valid.Replace("  evaluation: data/test.npz", "  evaluation: data/test.npz\n  training: data/train.npz", StringComparison.Ordinal)
            + "\nfinetune:\n" + entry + "\n");

        Assert.True(error.Code is ErrorCode.PolicyInvalidValue or ErrorCode.PolicyWrongType, error.ToString());
        Assert.Equal(20, error.Location!.Line);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Hawq_order_without_the_analysis_is_refused_at_the_order()
    {
        _folder.Copy(Fixtures.Data("digits-calibration.npz"), "data/train.npz");
        var error = Fails(Valid.Replace("  evaluation: data/test.npz", "  evaluation: data/test.npz\n  training: data/train.npz", StringComparison.Ordinal)
            + "\nsensitivity:\n  method: none\nfinetune:\n  order: hawq\n");

        Assert.Equal(ErrorCode.PolicyInvalidValue, error.Code);
        Assert.Equal(22, error.Location!.Line);
    }

    [Theory]
    [InlineData("budget: {}", "names no budget")]
    [InlineData("budget: {compression_ratio: 8, average_bits: 4}", "names 2 budgets")]
    public void A_budget_with_zero_or_two_forms_is_QT1105(string budget, string expected)
    {
        var error = Fails(Valid.Replace("budget:\n    max_size: 16KiB", budget, StringComparison.Ordinal));

        Assert.Equal(ErrorCode.PolicyBudget, error.Code);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_model_file_is_QT1106_at_the_path()
    {
        var error = Fails(Valid.Replace("models/lenet5.onnx", "models/resnet.onnx", StringComparison.Ordinal));

        Assert.Equal(ErrorCode.PolicyMissingFile, error.Code);
        Assert.Equal((3, 11), (error.Location!.Line, error.Location.Column));
        Assert.Contains("models/resnet.onnx", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_required_key_is_QT1107()
    {
        var error = Fails("version: 1\n");

        Assert.Equal(ErrorCode.PolicyMissingKey, error.Code);
        Assert.Contains("'models'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Trace_without_calibration_data_is_QT1107()
    {
        var error = Fails("version: 1\nmodels:\n  - path: models/lenet5.onnx\nsensitivity:\n  method: trace\n");

        Assert.Equal(ErrorCode.PolicyMissingKey, error.Code);
        Assert.Contains("data.calibration", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_calibration_data_the_defaults_are_the_ones_that_need_none()
    {
        var policy = Load("version: 1\nmodels:\n  - path: models/lenet5.onnx\n").Policy;

        Assert.Equal(SensitivityMethod.None, policy.Sensitivity.Method);
        Assert.Equal(OmegaKind.Sensitivity, policy.Quantization.Omega);
        Assert.Equal(CompensationKind.None, policy.Quantization.Compensation);
    }

    [Theory]
    [InlineData("quantization:\n  omega: output-error\n", "None")]
    [InlineData("quantization:\n  omega: sensitivity\n", "Trace")]
    [InlineData("quantization:\n  omega: hessian-diagonal\n", "Trace")]
    [InlineData("quantization:\n  omega: sensitivity\nsensitivity:\n  method: eigenvalue\n", "Eigenvalue")]
    [InlineData("quantization:\n  omega: sensitivity\nsensitivity:\n  method: none\n", "None")]
    public void With_calibration_data_the_analysis_turns_on_only_when_the_policy_uses_it(string sections, string expected)
    {
        var policy = Load("version: 1\nmodels:\n  - path: models/lenet5.onnx\ndata:\n  calibration: data/calib.npz\n" + sections).Policy;

        Assert.Equal(Enum.Parse<SensitivityMethod>(expected), policy.Sensitivity.Method);
    }

    [Fact]
    public void An_unknown_enum_value_is_QT1104_and_lists_the_allowed_ones()
    {
        var error = Fails(Valid.Replace("hessian-kmeans", "hessian_kmeans", StringComparison.Ordinal));

        Assert.Equal(ErrorCode.PolicyInvalidValue, error.Code);
        Assert.Equal((9, 11), (error.Location!.Line, error.Location.Column));
        Assert.Contains("\"uniform\", \"kmeans\", \"hessian-kmeans\", \"ecsq\"", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_problem_is_reported_in_file_order()
    {
        var error = Fails(Valid
            .Replace("name: Digits", "nmae: Digits", StringComparison.Ordinal)
            .Replace("max_drop: 1", "max_drop: 200", StringComparison.Ordinal));

        Assert.Equal([ErrorCode.PolicyUnknownKey, ErrorCode.PolicyInvalidValue], error.All.Select(e => e.Code));
        Assert.Equal([4, 17], error.All.Select(e => e.Location!.Line));
    }

    [Fact]
    public void Duplicate_keys_are_QT1101()
    {
        var error = Fails("version: 1\nversion: 1\nmodels:\n  - path: models/lenet5.onnx\n");

        Assert.Equal(ErrorCode.PolicySyntax, error.Code);
        Assert.Equal(2, error.Location!.Line);
    }

    [Fact]
    public void An_empty_key_counts_as_not_given()
    {
        var loaded = Load("version: 1\nmodels:\n  - path: models/lenet5.onnx\ndata:\nsensitivity:\n  method: none\n");

        Assert.Null(loaded.Policy.Data.Calibration);
    }

    [Fact]
    public void Two_models_that_would_generate_the_same_class_are_QT1104()
    {
        var error = Fails("""
            version: 1
            models:
              - path: models/lenet5.onnx
              - path: models/lenet5.onnx
            sensitivity:
              method: none
            """);

        Assert.Equal(ErrorCode.PolicyInvalidValue, error.Code);
        Assert.Contains("Lenet5Model", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("digits.onnx", "Digits")]
    [InlineData("mnist-lenet_5.onnx", "MnistLenet5")]
    [InlineData("3d-unet.onnx", "Model3dUnet")]
    public void Class_names_come_from_file_names(string file, string name) =>
        Assert.Equal(name, PolicyLoader.ModelName(new ModelOptions { Path = file }));

    [Theory]
    [InlineData("65536", 65536)]
    [InlineData("64KB", 64000)]
    [InlineData("64 KiB", 65536)]
    [InlineData("1.5MB", 1500000)]
    [InlineData("2GiB", 2147483648)]
    public void Sizes_parse_with_decimal_and_binary_units(string text, long bytes)
    {
        Assert.True(ByteSize.TryParse(text, out var size));
        Assert.Equal(bytes, size.Bytes);
    }

    private LoadedPolicy Load(string yaml)
    {
        var path = _folder.File("quant.yaml");
        File.WriteAllText(path, yaml);
        return PolicyLoader.Load(path);
    }

    private QuantException Fails(string yaml)
    {
        var error = Assert.Throws<QuantException>(() => Load(yaml));
        Assert.Equal(_folder.File("quant.yaml"), error.Location!.File);
        Assert.Equal(ExitCode.BadInput, error.ExitCode);
        return error;
    }
}
