#!/usr/bin/env bash
# The worker's two trainers side by side in the same run: the built-in one
# (worker/trainer.c: common/nn's cnn-small, in float32 and with bfloat16
# products) and the external PyTorch example (deploy/examples/pytorch_trainer.py,
# the same conv32-pool-conv64-pool-fc128-fc network), on 10x56x56 encoded MNIST.
#
#   bench/worker_train.sh [KEYDIR]      (from the project root; builds build-rel/)
#
# Steps: train a key with archnet-publisher (6,000 images, one epoch, batch 64)
# unless an existing KEYDIR is given; encode the first 6,000 MNIST training
# images with it (5,400 to train on, 600 held back for validation, float16);
# check that both networks have the same parameter count; then train, one after
# the other, through build-rel/bench/worker_train_bench (the worker's own
# an_trainer_builtin and an_trainer_exec): the built-in trainer in float32, in
# bf16, and the PyTorch command; ROUNDS times in turn (default 1; the table has
# the medians). Same epochs (EPOCHS, default 1), batch 64, Adam 1e-3, 2 threads
# (OMP_NUM_THREADS=2, ARCHNET_THREADS=2). Each exported ONNX model is scored on
# the 600 validation codes with `archnet-worker onnx-run`.
#
# Training images/s: ours from the trainer call to its last step; PyTorch's from
# its own per-epoch log (its training loop only; the log rounds img/s to an
# integer). Wall s and CPU s cover the whole trainer call (for PyTorch also the
# interpreter start, `import torch`, and the export). Everything goes to a
# temporary folder removed at the end. On a 2-core machine shared with other
# work (load average 6-10) one round took 3 minutes with a KEYDIR and 7.5
# without (the key alone 4); the load average is printed, and the figures are
# only comparable when it stayed flat.
set -euo pipefail
cd "$(dirname "$0")/.."

data=../shared/datasets/mnist
epochs=${EPOCHS:-1}
rounds=${ROUNDS:-1}
key=${1:-}
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "bench/worker_train.sh: no MNIST in $data" >&2; exit 1; }
[ -z "$key" ] || [ -f "$key/manifest.json" ] || { echo "bench/worker_train.sh: $key is not a key" >&2; exit 1; }
/usr/bin/python3 -c 'import torch, numpy' 2>/dev/null ||
  { echo "bench/worker_train.sh: needs Debian's python3-torch and python3-numpy" >&2; exit 1; }

if [ -f build-rel/build.ninja ]; then
  meson configure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
else
  meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
fi
meson compile -C build-rel bench/worker_train_bench worker/archnet-worker \
  publisher/archnet-publisher >/dev/null

tmp=$(mktemp -d /tmp/worker-train.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=2 ARCHNET_THREADS=2
publisher=build-rel/publisher/archnet-publisher

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "bf16: $(grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo && echo native || echo emulated)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "$key" ]; then
  echo "training a key (archnet-mnist, 6,000 images, 1 epoch) ..." >&2
  key=$tmp/key
  $publisher train --preset archnet-mnist --data "$data" --out "$key" --limit 6000 \
    --epochs 1 --batch 64 >/dev/null
fi
echo "encoding 6,000 images with $key ..." >&2
$publisher encode --key "$key" --data "$data" --out "$tmp/enc" --limit 6000 >/dev/null

# Same architecture: common/nn's preset and the Python model, parameter for parameter.
ours_params=$($publisher model-info --preset cnn-small --input 10x56x56 | sed -n 's/^params: //p')
torch_params=$(/usr/bin/python3 - <<'PY'
import importlib.util
spec = importlib.util.spec_from_file_location("trainer", "deploy/examples/pytorch_trainer.py")
trainer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trainer)
print(sum(p.numel() for p in trainer.SmallCNN(10, 56, 56, 10).parameters()))
PY
)
[ "$ours_params" = "$torch_params" ] ||
  { echo "bench/worker_train.sh: cnn-small has $ours_params parameters, SmallCNN $torch_params" >&2; exit 1; }

# run NAME MODE ARG: trains into $tmp/NAME.onnx, then scores it.
run() {
  local name=$1 mode=$2 arg=$3
  echo "training: $name ..." >&2
  build-rel/bench/worker_train_bench "$mode" "$arg" "$tmp/enc/train_x.npy" \
    "$tmp/enc/train_y.npy" "$tmp/$name.onnx" "$epochs" >"$tmp/$name.out" 2>"$tmp/$name.err" ||
    { cat "$tmp/$name.err" >&2; exit 1; }
  build-rel/worker/archnet-worker onnx-run "$tmp/$name.onnx" "$tmp/enc/val_x.npy" >"$tmp/$name.pred"
}
for round in $(seq "$rounds"); do
  run "builtin-f32-$round" builtin f32
  run "builtin-bf16-$round" builtin bf16
  run "pytorch-$round" command '/usr/bin/python3 deploy/examples/pytorch_trainer.py "$1" "$2" "$3"'
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

/usr/bin/python3 - "$tmp" "$ours_params" "$epochs" "$rounds" \
  "$(/usr/bin/python3 -c 'import torch; print(torch.__version__)')" <<'PY'
import re, statistics, sys
import numpy as np
tmp, params, epochs, rounds, torch_version = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                              int(sys.argv[4]), sys.argv[5])
val_y = np.load(f"{tmp}/enc/val_y.npy").astype(np.int64)
per_epoch = len(np.load(f"{tmp}/enc/train_y.npy")) // 64 * 64

def measured(name):
    """The driver's line, training images/s and validation accuracy of one run."""
    fields = dict(f.split("=") for f in open(f"{tmp}/{name}.out").read().split())
    m = {k: float(v) for k, v in fields.items()}
    if name.startswith("pytorch"):
        # Its own per-epoch log: the training loop only.
        log = open(f"{tmp}/{name}.err").read()
        rates = [float(r) for r in re.findall(r"epoch \d+/\d+: loss [0-9.]+, ([0-9.]+) img/s", log)]
        assert len(rates) == epochs, log
        m["rate"] = per_epoch * epochs / sum(per_epoch / r for r in rates)
    else:
        m["rate"] = m["steps"] * m["batch"] / m["train_seconds"]
    lines = open(f"{tmp}/{name}.pred").read().split("\n")
    pred = np.array([int(s) for s in lines[1:] if s])
    assert pred.shape == val_y.shape, (name, pred.shape, val_y.shape)
    m["acc"] = float((pred == val_y).mean())
    return m

trainers = (("built-in (common/nn)", "f32", "builtin-f32"),
            ("built-in (common/nn)", "bf16", "builtin-bf16"),
            (f"PyTorch {torch_version}", "f32", "pytorch"))
runs = {name: [measured(f"{name}-{r}") for r in range(1, rounds + 1)] for _, _, name in trainers}
median = {name: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for name, ms in runs.items()}
torch = median["pytorch"]

print(f"{'trainer':22s} {'precision':>9s} {'train img/s':>11s} {'vs PyTorch':>10s} "
      f"{'wall s':>7s} {'CPU s':>7s} {'CPU vs PyTorch':>14s} {'val acc':>7s}")
for impl, prec, name in trainers:
    m = median[name]
    print(f"{impl:22s} {prec:>9s} {m['rate']:11.1f} {m['rate'] / torch['rate']:9.2f}x "
          f"{m['wall_seconds']:7.1f} {m['cpu_seconds']:7.1f} "
          f"{torch['cpu_seconds'] / m['cpu_seconds']:13.2f}x {100 * m['acc']:6.1f}%")
print(f"(cnn-small and SmallCNN: {params:,} parameters each; {epochs} epoch(s) of {per_epoch:,}"
      f" images, batch 64, Adam 1e-3, 2 threads.")
print(" 'vs PyTorch' = train img/s over PyTorch's; wall s and CPU s (user + system) = the whole"
      " trainer call;")
print(" 'CPU vs PyTorch' = PyTorch's CPU s over ours, steadier than wall time when the cores"
      " are shared;")
print(f" val acc on {len(val_y)} held-back codes, +-{100 * (0.25 / len(val_y)) ** 0.5:.0f}"
      " points at most (1 s.e.)" + (f"; medians of {rounds} rounds)" if rounds > 1 else ")"))
for impl, prec, name in trainers if rounds > 1 else ():
    print(f"  {name:13s} by round: train img/s " +
          " ".join(f"{m['rate']:.1f}" for m in runs[name]) + ", CPU s " +
          " ".join(f"{m['cpu_seconds']:.1f}" for m in runs[name]))
PY
