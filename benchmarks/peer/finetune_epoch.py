"""Peer for the fine-tuning benchmark: one epoch of shared-weight training of LeNet-5 in PyTorch, the same work
QuantTasks' finetune stage does per epoch.

Every weight tensor is a per-tensor 16-level codebook at the quantiles of its values (each weight indexes its
nearest level; the weight is rebuilt from the levels by a gather every step, so each level's gradient is the sum
of its weights' gradients); biases train freely. Loss: 0.5 x cross-entropy + 0.5 x T^2 KL(teacher || student) at
T = 2, the teacher's logits computed once before the timed epochs. Adam at 1e-3, batches of 64, all samples.
Usage: python3 finetune_epoch.py MODEL.onnx TRAIN.npz EPOCHS BATCH THREADS
Prints one JSON line: {"seconds_per_epoch": [...], "final_loss": ...}.
"""
import json
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def codebook(values, levels=16):
    flat = values.reshape(-1)
    ordered = torch.sort(flat).values
    positions = ((torch.arange(levels, dtype=torch.float64) + 0.5) / levels * flat.numel()).long()
    table = ordered[positions].clone()
    index = (flat.unsqueeze(1) - table.unsqueeze(0)).abs().argmin(1)
    return torch.nn.Parameter(table), index


def main():
    model_path, data_path, epochs, batch, threads = sys.argv[1:6]
    epochs, batch = int(epochs), int(batch)
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(model_path).graph.initializer}
    data = np.load(data_path)
    x = torch.from_numpy(data["input"])
    y = torch.from_numpy(data["label"])

    names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    shapes = {n: init[n + ".weight"].shape for n in names}
    shared = {n: codebook(init[n + ".weight"]) for n in names}
    biases = {n: torch.nn.Parameter(init[n + ".bias"].clone()) for n in names}

    def forward(inputs, weights, bias):
        h = F.max_pool2d(F.relu(F.conv2d(inputs, weights["conv1"], bias["conv1"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, weights["conv2"], bias["conv2"])), 2)
        h = torch.flatten(h, 1)
        h = F.relu(F.linear(h, weights["fc1"], bias["fc1"]))
        h = F.relu(F.linear(h, weights["fc2"], bias["fc2"]))
        return F.linear(h, weights["fc3"], bias["fc3"])

    with torch.no_grad():
        teacher = forward(x, {n: init[n + ".weight"] for n in names}, {n: init[n + ".bias"] for n in names})

    parameters = [shared[n][0] for n in names] + [biases[n] for n in names]
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    temperature = 2.0
    times, loss = [], None
    for _ in range(epochs):
        order = torch.randperm(x.shape[0])
        start = time.perf_counter()
        for begin in range(0, x.shape[0], batch):
            rows = order[begin:begin + batch]
            weights = {n: shared[n][0][shared[n][1]].view(shapes[n]) for n in names}
            logits = forward(x[rows], weights, biases)
            log_q = F.log_softmax(logits / temperature, 1)
            log_p = F.log_softmax(teacher[rows] / temperature, 1)
            kl = (log_p.exp() * (log_p - log_q)).sum() * (temperature ** 2 / rows.numel())
            loss = 0.5 * F.cross_entropy(logits, y[rows]) + 0.5 * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds_per_epoch": times, "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
