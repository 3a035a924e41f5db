#!/usr/bin/python3
"""PyTorch side of the publisher's acceptance run (bench/publisher_train.sh).

  /usr/bin/python3 bench/archnet_train_torch.py [MNIST_DIR] [--epochs N] [--eval-images N] [--seed N] [--limit N]

Trains the paper's MNIST ArchNet (the model of ../shared/reference/archnet_torch.py,
imported from there, with PyTorch's default uniform initialisation as the reference
uses it) as an identity map: MSE, Adam lr 1e-3, batch 256, 2 threads, shuffled each
epoch, full batches only (234 steps = 59,904 of the 60,000 images per epoch, as
`archnet-publisher train` does). Then measures the reconstruction on the first N test
images: output clamped to [0, 1], PSNR per image = 10 log10(1 / mse), averaged.

Prints one JSON line: train_seconds (the training loop only: the data are already
in memory), psnr_db, mse, images, steps, epochs, eval_images, torch.
Needs Debian's python3-torch and python3-numpy (`apt-get install python3-torch`).
"""
import argparse, gzip, json, math, os, sys, time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REF_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "reference"))
sys.path.insert(0, REF_DIR)
from archnet_torch import ArchNet  # noqa: E402  (the reference's model, not a copy)

torch.set_num_threads(2)


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051:
        sys.exit(f"{path}: not an idx image file (magic {magic})")
    px = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if px.size != n * h * w:
        sys.exit(f"{path}: {px.size} bytes of pixels, expected {n}x{h}x{w}")
    return torch.from_numpy(px.reshape(n, 1, h, w).astype(np.float32) / 255.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", default=os.path.join(HERE, "..", "..", "shared", "datasets",
                                                             "mnist"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (0 = all)")
    a = ap.parse_args()

    train = read_idx_images(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
    if a.limit:
        train = train[:a.limit]
    test = read_idx_images(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"))[:a.eval_images]

    torch.manual_seed(a.seed)
    model = ArchNet()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = train.shape[0] // a.batch
    model.train()
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        order = torch.randperm(train.shape[0])
        for step in range(steps):
            x = train[order[step * a.batch:(step + 1) * a.batch]]
            loss = F.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                sys.exit(f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}")
            if step % 20 == 0 or step + 1 == steps:
                print(f"epoch {epoch + 1}/{a.epochs} step {step + 1}/{steps} loss {loss.item():.5f} "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    train_seconds = time.perf_counter() - t0

    model.eval()
    mse_sum = psnr_sum = 0.0
    with torch.no_grad():
        for i in range(0, test.shape[0], a.batch):
            x = test[i:i + a.batch]
            y = model(x).clamp(0, 1)
            mse = ((y - x).double() ** 2).flatten(1).mean(1)
            mse_sum += mse.sum().item()
            psnr_sum += torch.where(mse > 1e-10, 10 * torch.log10(1.0 / mse),
                                    torch.full_like(mse, 100.0)).sum().item()
    n = test.shape[0]
    print(json.dumps({"train_seconds": round(train_seconds, 1), "psnr_db": round(psnr_sum / n, 3),
                      "mse": round(mse_sum / n, 6), "images": steps * a.batch * a.epochs,
                      "steps": steps * a.epochs, "epochs": a.epochs, "eval_images": n,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
