#!/usr/bin/python3
"""An external trainer for archnet-worker, in PyTorch (Debian's python3-torch).

    archnet-worker run --trainer command \
        --trainer-cmd '/usr/bin/python3 deploy/examples/pytorch_trainer.py "$1" "$2" "$3"'

The worker calls it with X.npy (N x C x H x W codes: float16, float32 or
uint8, used as float32 as stored), Y.npy (N labels) and the path of the ONNX
file to write; ARCHNET_CLASSES says how many classes the model must output.
This example trains the small CNN of the ArchNet paper's experiments
(conv32-pool-conv64-pool-fc128-fc) with Adam; a volunteer can put any
method here: it never leaves their machine, only the ONNX file does.

Environment knobs: ARCHNET_EPOCHS (3), ARCHNET_BATCH (64), ARCHNET_LR (1e-3),
ARCHNET_THREADS (all cores), ARCHNET_SEED (1).
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    def __init__(self, in_ch, h, w, classes):
        super().__init__()
        self.c1 = nn.Conv2d(in_ch, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (h // 4) * (w // 4), 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: pytorch_trainer.py X.npy Y.npy OUT.onnx")
    x_path, y_path, out = sys.argv[1:]
    classes = int(os.environ.get("ARCHNET_CLASSES", "10"))
    epochs = int(os.environ.get("ARCHNET_EPOCHS", "3"))
    batch = int(os.environ.get("ARCHNET_BATCH", "64"))
    lr = float(os.environ.get("ARCHNET_LR", "1e-3"))
    torch.manual_seed(int(os.environ.get("ARCHNET_SEED", "1")))
    if "ARCHNET_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["ARCHNET_THREADS"]))

    # Memory-mapped: an encoded MNIST training set is several GB.
    x = np.load(x_path, mmap_mode="r")
    y = np.load(y_path).astype(np.int64)
    n, c, h, w = x.shape
    if y.shape != (n,) or y.min() < 0 or y.max() >= classes:
        sys.exit(f"labels do not match: {y.shape}, range {y.min()}..{y.max()}, {classes} classes")
    model = SmallCNN(c, h, w, classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.time()
    for epoch in range(epochs):
        order = torch.randperm(n).numpy()
        seen, loss_sum = 0, 0.0
        for i in range(0, n - batch + 1, batch):
            idx = np.sort(order[i:i + batch])
            xb = torch.from_numpy(np.asarray(x[idx], dtype=np.float32))
            yb = torch.from_numpy(y[idx])
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += batch
            loss_sum += loss.item() * batch
        print(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / max(seen, 1):.4f}, "
              f"{seen / (time.time() - t0):.0f} img/s", file=sys.stderr, flush=True)
        t0 = time.time()
    model.eval()
    torch.onnx.export(model, torch.zeros(1, c, h, w), out, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                      opset_version=13)


if __name__ == "__main__":
    main()
