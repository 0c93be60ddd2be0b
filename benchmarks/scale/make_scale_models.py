"""Models for the scale benchmark: ResNet-18 and ResNet-50 shapes at 224 x 224, random (seeded) weights and
BatchNorm statistics, exported by PyTorch's own ONNX exporter in eval mode, so BatchNorm is folded into the
convolutions as users' exports are; and synthetic calibration and evaluation images.

    python3 make_scale_models.py OUT_DIR

Writes resnet18-w20.onnx (about 1.1 M weights), resnet18-w42.onnx (about 4.8 M), resnet18.onnx (11.7 M),
resnet50.onnx (25.6 M), images-calibration.npz and images-evaluation.npz (N x 3 x 224 x 224, no labels).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.down = None
        if stride != 1 or cin != width:
            self.down = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.down = None
        if stride != 1 or cin != out:
            self.down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, base=64, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], base
        for stage, count in enumerate(layers):
            width = base * 2 ** stage
            for i in range(count):
                blocks.append(block(cin, width, 2 if i == 0 and stage > 0 else 1))
                cin = width * block.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def randomise(model, seed):
    """Kaiming weights (PyTorch's own init, seeded) and BatchNorm statistics spread over orders of magnitude, as
    trained networks have, so the folded per-channel scales differ widely."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.exp(torch.randn(c, generator=g) * 0.5) * 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean = torch.randn(c, generator=g) * 0.1
            m.running_var = torch.exp(torch.randn(c, generator=g) * 1.5)
    model.eval()
    return model


def export(model, path):
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, x, path, opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, do_constant_folding=True)
    weights = sum(p.numel() for n, p in model.named_parameters() if "bn" not in n and "down.1" not in n
                  and "stem.1" not in n)
    print(f"{os.path.basename(path)}: {weights:,} weights (before folding)")


def images(count, seed):
    """Smooth synthetic images in ImageNet normalisation: low-frequency noise upsampled, so neighbouring pixels
    correlate as in photographs (white noise would make every convolution's input Gram matrix near-diagonal)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(count, 3, 14, 14, generator=g)
    x = nn.functional.interpolate(low, size=(224, 224), mode="bicubic", align_corners=False)
    x = x + 0.1 * torch.randn(count, 3, 224, 224, generator=g)
    return x.numpy().astype(np.float32)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    export(randomise(ResNet(Basic, [2, 2, 2, 2], base=20), 1), os.path.join(out, "resnet18-w20.onnx"))
    export(randomise(ResNet(Basic, [2, 2, 2, 2], base=42), 2), os.path.join(out, "resnet18-w42.onnx"))
    export(randomise(ResNet(Basic, [2, 2, 2, 2]), 3), os.path.join(out, "resnet18.onnx"))
    export(randomise(ResNet(Bottleneck, [3, 4, 6, 3]), 4), os.path.join(out, "resnet50.onnx"))
    np.savez(os.path.join(out, "images-calibration.npz"), input=images(128, 5))
    np.savez(os.path.join(out, "images-evaluation.npz"), input=images(64, 6))


if __name__ == "__main__":
    main()
