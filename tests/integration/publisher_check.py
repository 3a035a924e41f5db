"""Checks `encode`'s output with numpy: publisher_check.py F32_DIR F16_DIR U8_DIR.

The three folders hold the same images encoded with --dtype f32, f16 and
u8. numpy must read every file, the shapes and types must be the ones
documented, the labels must agree, float16 must be exactly numpy's own
rounding of the float32 codes, and uint8 must be the documented per-channel
quantisation of them (within one step for float rounding). Prints
"encodings: ok" or fails with the reason."""
import json
import sys

import numpy as np


def load(d, name):
    return np.load(f"{d}/{name}.npy", allow_pickle=False)


def main():
    f32, f16, u8 = sys.argv[1:4]
    info = json.load(open(f"{u8}/encoding.json"))
    c, h, w = info["shape"]
    lo = np.array([r[0] for r in info["u8_range"]], dtype=np.float64)
    hi = np.array([r[1] for r in info["u8_range"]], dtype=np.float64)
    for part in ("train", "val", "test"):
        x32, x16, x8 = load(f32, part + "_x"), load(f16, part + "_x"), load(u8, part + "_x")
        n = info["split"][part]
        assert x32.dtype == np.float32 and x16.dtype == np.float16 and x8.dtype == np.uint8
        for x in (x32, x16, x8):
            assert x.shape == (n, c, h, w), (part, x.shape)
        ys = [load(d, part + "_y") for d in (f32, f16, u8)]
        assert all(y.dtype == np.uint8 and y.shape == (n,) for y in ys)
        assert (ys[0] == ys[1]).all() and (ys[0] == ys[2]).all(), part + ": labels differ"
        assert ys[0].max() <= 9
        assert np.array_equal(x16, x32.astype(np.float16)), part + ": float16 is not numpy's rounding"
        span = np.where(hi > lo, hi - lo, 1.0)[None, :, None, None]
        want = np.clip(np.rint((x32 - lo[None, :, None, None]) / span * 255), 0, 255)
        off = np.abs(want - x8.astype(np.float64)).max()
        assert off <= 1, f"{part}: uint8 codes off by {off}"
    assert info["split"]["train"] + info["split"]["val"] == info["split"]["source"]
    print("encodings: ok")


if __name__ == "__main__":
    main()
