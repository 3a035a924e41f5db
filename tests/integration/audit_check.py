#!/usr/bin/python3
"""Recomputes `archnet-publisher audit`'s ridge attacker with numpy from the
arrays it dumped (--dump) and checks the figures it reported (audit.json).

Usage: audit_check.py OUT_DIR DUMP_DIR. Exits 0 when every figure agrees,
1 with the differences otherwise. Written from the definitions in
publisher/ridge.h and publisher/metrics.h, not from the C code.
"""
import json
import sys

import numpy as np

ALPHAS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2]
PSNR_MAX = 100.0


def ridge_predict(x, y, t, lam):
    """Ridge with an unpenalised bias fitted on (x, y), evaluated at rows t."""
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    a = np.linalg.solve(xc @ xc.T + lam * np.eye(len(x)), y - my)
    return my + ((t - mx) @ xc.T) @ a


def loo_curve(x, y):
    """Leave-one-out mse for each alpha by brute force: k refits each, the
    bias and centring recomputed without the pair left out. lambda is
    alpha * trace(Xc Xc^T) / k on all k pairs, as publisher/ridge.h says."""
    k = len(x)
    xc = x - x.mean(0)
    scale = (xc * xc).sum() / k
    scale = scale if scale > 0 else 1.0
    curve = []
    for alpha in ALPHAS:
        se = 0.0
        for i in range(k):
            keep = np.arange(k) != i
            r = y[i] - ridge_predict(x[keep], y[keep], x[i:i + 1], alpha * scale)[0]
            se += (r * r).sum()
        curve.append(se / (k * y.shape[1]))
    return curve


def psnr(orig, recon):
    r = np.clip(recon, 0.0, 1.0)
    mse = ((r - orig) ** 2).reshape(len(orig), -1).mean(1)
    safe = np.where(mse < 1e-10, 1.0, mse)
    return np.where(mse < 1e-10, PSNR_MAX, 10 * np.log10(1.0 / safe)).mean()


def ssim(orig, recon):
    """Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
    L 1, valid positions only; mean over channels and images."""
    t = np.arange(11) - 5
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    x = orig.astype(np.float64)
    y = np.clip(recon, 0.0, 1.0).astype(np.float64)

    def filt(img):
        win = np.lib.stride_tricks.sliding_window_view(img, (11, 11), axis=(-2, -1))
        return np.einsum("...ij,ij->...", win, g)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return m.mean(axis=(-2, -1)).mean()


def reid(orig, recon):
    o = orig.reshape(len(orig), -1).astype(np.float64)
    r = np.clip(recon, 0.0, 1.0).reshape(len(recon), -1).astype(np.float64)
    d = (r * r).sum(1)[:, None] - 2 * r @ o.T + (o * o).sum(1)[None, :]
    return (d.argmin(1) == np.arange(len(o))).mean()


def main():
    out, dump = sys.argv[1], sys.argv[2]
    report = json.load(open(f"{out}/audit.json"))
    pairs_x = np.load(f"{dump}/pairs_codes.npy").astype(np.float64)
    pairs_y = np.load(f"{dump}/pairs_images.npy").astype(np.float64)
    held_x = np.load(f"{dump}/heldout_codes.npy").astype(np.float64)
    held_y = np.load(f"{dump}/heldout_images.npy").astype(np.float64)
    n = len(held_x)
    failures = []

    def check(what, got, want, tol):
        ok = abs(got - want) <= tol
        print(f"{what}: C {got:.6g}, numpy {want:.6g}{'' if ok else '  <-- differs'}")
        if not ok:
            failures.append(what)

    if report["held_out"] != n or list(report["image_shape"]) != list(held_y.shape[1:]):
        failures.append("held-out count or image shape")
    ridges = [a for a in report["attacks"] if a["attacker"] == "ridge"]
    if not ridges:
        failures.append("no ridge results")
    for att in ridges:
        k = att["k"]
        x = pairs_x[:k].reshape(k, -1)
        y = pairs_y[:k].reshape(k, -1)
        scores = loo_curve(x, y)
        best = float(np.argmin(scores))
        # C's pick must be a minimum of the brute-force curve (equal up to
        # rounding when two alphas tie), and its closed-form error the same.
        c_score = scores[ALPHAS.index(att["alpha"])] if att["alpha"] in ALPHAS else np.inf
        check(f"k={k} leave-one-out mse at C's alpha {att['alpha']:g} "
              f"(numpy's pick {ALPHAS[int(best)]:g})", c_score, min(scores), 1e-5 * min(scores))
        check(f"k={k} leave-one-out mse, C closed form vs numpy refits", att["loo_mse"], c_score,
              1e-5 * c_score)
        recon = ridge_predict(x, y, held_x.reshape(n, -1), att["lambda"]).reshape(held_y.shape)
        dumped = np.load(f"{dump}/ridge_k{k}.npy").astype(np.float64)
        check(f"k={k} max |recon C - numpy|", float(np.abs(dumped - recon).max()), 0.0, 1e-4)
        check(f"k={k} PSNR dB", att["psnr_db"], psnr(held_y, recon), 1e-3)
        check(f"k={k} SSIM", att["ssim"], ssim(held_y, recon), 1e-4)
        check(f"k={k} re-id", att["reid"], reid(held_y, recon), 1.0 / n + 1e-9)
    # The learned decoder is not recomputed (its training is not bit-exact
    # across thread counts), but it must have learned: an untrained one
    # scores about 10 dB on MNIST.
    learned = [a for a in report["attacks"] if a["attacker"] == "learned decoder"]
    if not learned or max(a["psnr_db"] for a in learned) < 15.0:
        failures.append("the learned decoder did not learn")
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("all audit figures agree with numpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
