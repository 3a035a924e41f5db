#!/usr/bin/python3
"""Checks the output of `archnet-publisher baseline rc4` against RC4 written
here from its definition, on the MNIST files read with Python's gzip module:
nothing from the program under test is reused.

usage: rc4_check.py OUT MNIST_DIR MODE KEY_HEX LIMIT VAL_FRACTION DTYPE

Exit 0 and "ok" when every array is what RC4 gives; 1 and the reason if not.
Needs Debian's numpy: run it with /usr/bin/python3.
"""
import collections
import gzip
import sys

import numpy as np


def rc4_keystream(key, n):
    """RC4: the key schedule, then n bytes of output."""
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray(n)
    i = j = 0
    for k in range(n):
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out[k] = s[(s[i] + s[j]) & 0xFF]
    return np.frombuffer(bytes(out), dtype=np.uint8)


def self_test():
    """Published test vectors, so a slip here cannot pass for agreement."""
    for key, plain, cipher in ((b"Key", b"Plaintext", "bbf316e8d940af0ad3"),
                               (b"Wiki", b"pedia", "1021bf0420"),
                               (b"Secret", b"Attack at dawn", "45a01f645fc35b383552544b9bf5")):
        ks = rc4_keystream(key, len(plain))
        got = bytes(np.frombuffer(plain, dtype=np.uint8) ^ ks).hex()
        assert got == cipher, f"RC4 reference broken on key {key!r}: {got}"


def read_idx(path, limit, item):
    data = gzip.open(path).read()
    header = 16 if item > 1 else 8
    n = int.from_bytes(data[4:8], "big")
    n = min(n, limit) if limit else n
    return np.frombuffer(data[header:header + n * item], dtype=np.uint8).reshape(n, item)


def fail(msg):
    print(msg)
    sys.exit(1)


def decode(x, dtype, shape):
    """The ciphertext bytes behind an output array, checking the dtype's encoding."""
    want = {"f16": np.float16, "f32": np.float32, "u8": np.uint8}[dtype]
    if x.dtype != want:
        fail(f"dtype {x.dtype}, expected {np.dtype(want)}")
    if x.ndim != 4 or x.shape[1:] != shape:
        fail(f"shape {x.shape}, expected (N, {shape})")
    flat = x.reshape(len(x), int(np.prod(shape)))
    if dtype == "u8":
        return flat
    b = np.rint(flat.astype(np.float64) * 255.0)
    if b.min(initial=0) < 0 or b.max(initial=0) > 255:
        fail("values outside [0, 1]")
    b = b.astype(np.uint8)
    exact = (b.astype(np.float32) / np.float32(255.0)).astype(want)
    if not np.array_equal(exact.view(np.uint8), flat.view(np.uint8)):
        fail("values are not ciphertext byte / 255 rounded to the dtype")
    return b


def main():
    out, mnist, mode, key_hex, limit, val_fraction, dtype = sys.argv[1:8]
    limit, val_fraction, key = int(limit), float(val_fraction), bytes.fromhex(key_hex)
    self_test()
    tr_x = read_idx(mnist + "/train-images-idx3-ubyte.gz", limit, 784)
    tr_y = read_idx(mnist + "/train-labels-idx1-ubyte.gz", limit, 1)[:, 0]
    te_x = read_idx(mnist + "/t10k-images-idx3-ubyte.gz", limit, 784)
    te_y = read_idx(mnist + "/t10k-labels-idx1-ubyte.gz", limit, 1)[:, 0]
    n, m = len(tr_x), len(te_x)

    if mode == "stream":  # one keystream: train images, then test images
        ks = rc4_keystream(key, (n + m) * 784).reshape(n + m, 784)
        tr_c, te_c = tr_x ^ ks[:n], te_x ^ ks[n:]
    elif mode == "per-image":  # restarted for every image
        ks = rc4_keystream(key, 784)
        tr_c, te_c = tr_x ^ ks, te_x ^ ks
    else:
        fail(f"unknown mode {mode}")

    load = lambda name: np.load(f"{out}/{name}.npy", allow_pickle=False)
    parts = {p: (decode(load(p + "_x"), dtype, (1, 28, 28)), load(p + "_y"))
             for p in ("train", "val", "test")}
    for p, (x, y) in parts.items():
        if y.dtype != np.uint8 or y.shape != (len(x),):
            fail(f"{p}_y: dtype {y.dtype} shape {y.shape}")

    # The split: sizes as an_dataset_split promises them.
    n_val = int(np.floor(n * val_fraction + 0.5))
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    if len(parts["val"][0]) != n_val or len(parts["train"][0]) != n - n_val:
        fail(f"split {len(parts['train'][0])}/{len(parts['val'][0])}, expected {n - n_val}/{n_val}")

    # Train and validation together are the encrypted training split, each
    # image once, with its own label (the order is the seeded permutation).
    unused = collections.defaultdict(list)
    for i in range(n):
        unused[(tr_c[i].tobytes(), int(tr_y[i]))].append(i)
    for p in ("train", "val"):
        x, y = parts[p]
        for r in range(len(x)):
            k = (x[r].tobytes(), int(y[r]))
            if not unused[k]:
                fail(f"{p} row {r}: not the RC4 encryption of any unused training image "
                     f"with label {y[r]}")
            unused[k].pop()

    # The test split keeps its order.
    x, y = parts["test"]
    if len(x) != m or not np.array_equal(x, te_c) or not np.array_equal(y, te_y):
        fail("test split differs from the RC4 encryption of the test images")
    print("ok")


if __name__ == "__main__":
    main()
