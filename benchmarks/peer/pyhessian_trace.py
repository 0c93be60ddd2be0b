"""Peer for the Hessian benchmark: per-tensor Hutchinson traces the way PyHessian computes them, in PyTorch.

For every probe and every batch: a forward pass, the gradient with create_graph, and one Hessian-vector product
with a Rademacher vector over all weights; v_t . (Hv)_t summed over batches (weighted by batch size) estimates each
tensor's block trace. The ONNX model's weights are loaded into the PyTorch module of make_fixtures.py.
Usage: python3 pyhessian_trace.py MODEL.onnx lenet5|mlp DATA.npz SAMPLES BATCH PROBES
Prints one JSON line: {"seconds_in_loop": ..., "traces": {...}}. Time the whole process for startup included.
"""
import json
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import LeNet5, Mlp  # noqa: E402


def main():
    model_path, kind, data_path, samples, batch, probes = sys.argv[1:7]
    samples, batch, probes = int(samples), int(batch), int(probes)
    module = LeNet5() if kind == "lenet5" else Mlp()
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(model_path).graph.initializer}
    module.load_state_dict(weights)
    module.eval()
    data = np.load(data_path)
    x = torch.from_numpy(data["input"][:samples])
    y = torch.from_numpy(data["label"][:samples])
    params = [p for n, p in module.named_parameters() if n.endswith("weight")]
    names = [n for n, _ in module.named_parameters() if n.endswith("weight")]
    for p in module.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    traces = [0.0] * len(params)
    for _ in range(probes):
        v = [torch.randint(0, 2, p.shape, generator=generator).float() * 2 - 1 for p in params]
        for i in range(0, samples, batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            loss = F.cross_entropy(module(xb), yb)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(grads, params, grad_outputs=v)
            for t in range(len(params)):
                traces[t] += float((v[t] * hv[t]).sum()) * len(xb) / samples
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds_in_loop": elapsed, "traces": {n: t / probes for n, t in zip(names, traces)}}))


if __name__ == "__main__":
    main()
