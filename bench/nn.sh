#!/usr/bin/env bash
# common/nn against the PyTorch reference, side by side in the same run.
#
#   bench/nn.sh            (from the project root; builds build-rel/ first)
#
# Runs build-rel/bench/nn_bench and ../shared/reference/archnet_torch.py bench
# (Debian's python3-torch, 2 threads) one after the other on the same
# machine, then prints images/s for both and the ratio. Needs python3-torch:
# `apt-get install python3-torch` (the benchmark installs nothing itself).
set -euo pipefail
cd "$(dirname "$0")/.."

ref=../shared/reference/archnet_torch.py
[ -f "$ref" ] || { echo "bench/nn.sh: $ref not found" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "bench/nn.sh: needs Debian's python3-torch (apt-get install python3-torch)" >&2; exit 1; }

if [ -f build-rel/build.ninja ]; then
  meson configure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
else
  meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
fi
meson compile -C build-rel bench/nn_bench >/dev/null

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "running common/nn ..." >&2
ours=$(build-rel/bench/nn_bench --json)
echo "running PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') ..." >&2
# The reference runs unchanged; a wrapper reports its peak RSS (KiB) on stderr.
rss_file=$(mktemp)
theirs=$(/usr/bin/python3 -c '
import resource, runpy, sys
ref = sys.argv[1]
sys.argv = [ref, "bench", "--json"]
runpy.run_path(ref, run_name="__main__")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)' "$ref" 2>"$rss_file")
torch_rss=$(tail -1 "$rss_file")
rm -f "$rss_file"

/usr/bin/python3 - "$ours" "$theirs" "$torch_rss" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
torch_rss_kib = int(sys.argv[3] or 0)
print(f"{'workload':26s} {'common/nn':>12s} {'PyTorch':>10s} {'ratio':>7s}")
for key, rate in ours.items():
    if key == "peak_rss_mib":
        continue
    ref_key = key[:-5] if key.endswith("_bf16") else key
    ref = theirs.get(ref_key)
    ratio = f"{rate / ref:6.2f}x" if ref else "    -"
    ref_s = f"{ref:10.1f}" if ref else "         -"
    print(f"{key:26s} {rate:12.1f} {ref_s} {ratio}")
print(f"{'peak RSS (MiB)':26s} {ours['peak_rss_mib']:12.1f} {torch_rss_kib / 1024:10.1f}")
print("(images/s; *_bf16 rows use bfloat16 matrix products, compared with PyTorch's float32)")
PY
