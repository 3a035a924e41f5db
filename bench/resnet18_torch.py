#!/usr/bin/python3
"""CIFAR-style ResNet-18 (3x3 stem, BasicBlocks [2, 2, 2, 2] at 64-512 channels) for
the ONNX inference benchmark: exports it with a dynamic batch and times PyTorch's own
inference on the same weights (2 threads, eval mode, no_grad).

  resnet18_torch.py export OUT.onnx
  resnet18_torch.py bench BATCH ITERS         prints images/s
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (self.short(x) if self.short else x))


class ResNet18(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU())
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def model():
    torch.manual_seed(0)
    return ResNet18().eval()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "export":
        torch.onnx.export(model(), torch.rand(1, 3, 32, 32), sys.argv[2], input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                          opset_version=14)
    elif len(sys.argv) == 4 and sys.argv[1] == "bench":
        m, bs, iters = model(), int(sys.argv[2]), int(sys.argv[3])
        with torch.no_grad():
            for _ in range(2):
                m(torch.rand(bs, 3, 32, 32))
            t = time.perf_counter()
            for _ in range(iters):
                m(torch.rand(bs, 3, 32, 32))
        print(f"{iters * bs / (time.perf_counter() - t):.1f}")
    else:
        sys.exit(__doc__)
