#!/usr/bin/env bash
# The publisher's acceptance run: the paper's MNIST ArchNet trained on the full
# MNIST training set for one epoch, by `archnet-publisher train` and by PyTorch,
# side by side in the same run.
#
#   bench/publisher_train.sh     (from the project root; builds build-rel/ first)
#
# Runs, one after the other on the same machine (2 threads each):
#   archnet-publisher train --preset archnet-mnist ... --epochs 1 --eval-images 1000
#     once with the default precision (auto: bf16 products where the CPU has AMX)
#     and once with --precision f32;
#   bench/archnet_train_torch.py (Debian's python3-torch: the reference's ArchNet,
#     MSE, Adam lr 1e-3, batch 256, one epoch).
# Then prints training seconds, test-set PSNR (mean per image over the first 1,000
# test images, output clamped to [0, 1]) and the speed ratio against PyTorch.
# Takes about 15 minutes; each key (~490 MB) goes to a temporary folder that is
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

data=../shared/datasets/mnist
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "bench/publisher_train.sh: no MNIST in $data" >&2; exit 1; }
/usr/bin/python3 -c 'import torch, numpy' 2>/dev/null ||
  { echo "bench/publisher_train.sh: needs Debian's python3-torch and python3-numpy" >&2; exit 1; }

if [ -f build-rel/build.ninja ]; then
  meson configure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
else
  meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
fi
meson compile -C build-rel publisher/archnet-publisher >/dev/null

tmp=$(mktemp -d /tmp/publisher-train.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=2

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# run_ours NAME [extra train options]: prints "precision train_seconds psnr_db wall_seconds"
run_ours() {
  local name=$1; shift
  local key="$tmp/key-$name" t0 t1 last
  echo "running archnet-publisher train ($name) ..." >&2
  t0=$(date +%s.%N)
  last=$(build-rel/publisher/archnet-publisher train --preset archnet-mnist --data "$data" \
           --out "$key" --epochs 1 --eval-images 1000 "$@" | tail -1)
  t1=$(date +%s.%N)
  echo "  $last" >&2
  /usr/bin/python3 - "$key/manifest.json" "$last" "$(echo "$t1 - $t0" | bc -l)" <<'PY'
import json, re, sys
m = json.load(open(sys.argv[1]))
stdout_psnr = float(re.search(r"PSNR ([-0-9.]+) dB", sys.argv[2]).group(1))
psnr = m["reconstruction"]["psnr_db"]
assert abs(stdout_psnr - psnr) < 0.01, (stdout_psnr, psnr)
print(m["precision"], m["train_seconds"], psnr, sys.argv[3])
PY
  rm -rf "$key"
}

ours_auto=$(run_ours auto)
ours_f32=$(run_ours f32 --precision f32)

echo "running PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') ..." >&2
t0=$(date +%s.%N)
theirs=$(/usr/bin/python3 bench/archnet_train_torch.py "$data" --epochs 1 --eval-images 1000)
t1=$(date +%s.%N)

/usr/bin/python3 - "$ours_auto" "$ours_f32" "$theirs" "$(echo "$t1 - $t0" | bc -l)" <<'PY'
import json, sys
t = json.loads(sys.argv[3])
rows = []
for arg in sys.argv[1:3]:
    prec, secs, psnr, wall = arg.split()
    rows.append(("archnet-publisher", prec, float(secs), float(psnr), float(wall)))
rows.append((f"PyTorch {t['torch']}", "f32", t["train_seconds"], t["psnr_db"], float(sys.argv[4])))
ref = t["train_seconds"]
print(f"{'implementation':22s} {'precision':>9s} {'train s':>9s} {'PSNR dB':>8s} {'vs PyTorch':>10s} {'wall s':>8s}")
for impl, prec, secs, psnr, wall in rows:
    print(f"{impl:22s} {prec:>9s} {secs:9.1f} {psnr:8.2f} {ref / secs:9.2f}x {wall:8.1f}")
print(f"(one epoch = {t['steps']} steps of batch 256 = {t['images']} images; PSNR: mean per image on the")
print(f" first {t['eval_images']} MNIST test images; 'vs PyTorch' = PyTorch's train seconds / ours;")
print(" wall s = the whole command: data loading, training, evaluation, writing the key)")
PY
