#!/usr/bin/python3
"""Writes PyTorch golden files for common/nn's layer tests (tests/golden/torch).

Run with Debian's python3-torch:  python3 tests/golden/make_golden.py tests/golden/torch

Each case NAME has NAME.spec (the layer in common/nn's spec language, starting
with the input line) and raw little-endian float32 files: NAME_x.raw (input),
NAME_y (output), NAME_gy (upstream gradient), NAME_gx (input gradient) and,
for layers with parameters, NAME_w, NAME_b, NAME_gw, NAME_gb. The layer cases
of ../shared/reference/archnet_torch.py (conv3x3_p1, conv2x2_s2, convT2x2_s2,
linear) are written by that script's own `golden` command into the same
folder; this script adds the rest.
"""
import os
import subprocess
import sys

import torch
import torch.nn as nn

torch.manual_seed(4321)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)

# The shared reference's own cases, then their specs.
ref = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "reference",
                   "archnet_torch.py")
subprocess.run([sys.executable, ref, "golden", out], check=True)
ref_specs = {
    "conv3x3_p1": "input 3 8 8\nconv 4 k=3 p=1\n",
    "conv2x2_s2": "input 4 8 8\nconv 4 k=2 s=2\n",
    "convT2x2_s2": "input 4 5 5\nconvt 3 k=2 s=2\n",
    "linear": "input 12 1 1\nlinear 7\n",
}

cases = {
    "convT3x3_s2_p1": (nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), (2, 3, 4, 4),
                       "input 3 4 4\nconvt 2 k=3 s=2 p=1\n"),
    "conv5x5_s2_p2": (nn.Conv2d(2, 3, 5, stride=2, padding=2), (2, 2, 9, 9),
                      "input 2 9 9\nconv 3 k=5 s=2 p=2\n"),
    "maxpool3_s2_p1": (nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 7),
                       "input 3 7 7\nmaxpool k=3 s=2 p=1\n"),
    "avgpool3_s2_p1": (nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 7, 7),
                       "input 3 7 7\navgpool k=3 s=2 p=1\n"),
    "gap": (nn.AdaptiveAvgPool2d(1), (2, 4, 5, 3), "input 4 5 3\ngap\n"),
    "batchnorm_train": (nn.BatchNorm2d(3), (4, 3, 5, 5), "input 3 5 5\nbatchnorm\n"),
    "leakyrelu": (nn.LeakyReLU(0.1), (2, 3, 4, 4), "input 3 4 4\nleakyrelu alpha=0.1\n"),
    "sigmoid": (nn.Sigmoid(), (2, 3, 4, 4), "input 3 4 4\nsigmoid\n"),
    "tanh": (nn.Tanh(), (2, 3, 4, 4), "input 3 4 4\ntanh\n"),
}

def save(name, tag, t):
    t.detach().contiguous().numpy().astype("<f4").tofile(f"{out}/{name}_{tag}.raw")

for name, (layer, shape, spec) in cases.items():
    layer.train()
    if isinstance(layer, nn.BatchNorm2d):  # non-trivial scale and shift
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    for tag, t in [("x", x), ("y", y), ("gy", g), ("gx", x.grad)]:
        save(name, tag, t)
    if getattr(layer, "weight", None) is not None:
        for tag, t in [("w", layer.weight), ("b", layer.bias), ("gw", layer.weight.grad),
                       ("gb", layer.bias.grad)]:
            save(name, tag, t)
    ref_specs[name] = spec

for name, spec in ref_specs.items():
    with open(f"{out}/{name}.spec", "w") as f:
        f.write(spec)
print(f"wrote {len(ref_specs)} cases to {out}")

# Optimizer trajectories: the same parameters and gradients through three
# steps of torch.optim.Adam and torch.optim.SGD (momentum, weight decay).
torch.manual_seed(99)
p0 = torch.randn(37)
grads = [torch.randn(37) for _ in range(3)]
p0.numpy().astype("<f4").tofile(f"{out}/optim_p0.raw")
torch.stack(grads).numpy().astype("<f4").tofile(f"{out}/optim_grads.raw")
for name, make in {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
    "adam_wd": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
}.items():
    p = torch.nn.Parameter(p0.clone())
    opt = make([p])
    traj = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        traj.append(p.detach().clone())
    torch.stack(traj).numpy().astype("<f4").tofile(f"{out}/optim_{name}.raw")
print("wrote optimizer trajectories")
