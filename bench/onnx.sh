#!/usr/bin/env bash
# common/nn/onnx inference against PyTorch, side by side in the same run.
#
#   bench/onnx.sh        (from the project root; needs python3-torch)
#
# Models: smallcnn_10x56_dyn from ../shared/conformance (PyTorch side: the
# reference's cnn_infer_10x56_b64 workload, the same architecture) and a
# CIFAR ResNet-18 exported by bench/resnet18_torch.py. Batch 64, 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "bench/onnx.sh: needs Debian's python3-torch" >&2; exit 1; }
if [ -f build-rel/build.ninja ]; then
  meson configure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
else
  meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
fi
meson compile -C build-rel bench/onnx_bench >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 bench/resnet18_torch.py export "$tmp/resnet18.onnx" 2>/dev/null
export OMP_NUM_THREADS=2

cnn=../shared/conformance/torch-exports/smallcnn_10x56_dyn.onnx
ours_cnn=$(build-rel/bench/onnx_bench $cnn 64 20)
bf16_cnn=$(build-rel/bench/onnx_bench $cnn 64 40 bf16)
torch_cnn=$(/usr/bin/python3 ../shared/reference/archnet_torch.py bench --json |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["cnn_infer_10x56_b64"])')
ours_rn=$(build-rel/bench/onnx_bench "$tmp/resnet18.onnx" 64 3)
bf16_rn=$(build-rel/bench/onnx_bench "$tmp/resnet18.onnx" 64 6 bf16)
torch_rn=$(/usr/bin/python3 bench/resnet18_torch.py bench 64 3)

printf '%-28s %12s %10s %7s\n' model common/nn/onnx PyTorch ratio
for row in "smallcnn_10x56 f32 $ours_cnn $torch_cnn" "smallcnn_10x56 bf16 ${bf16_cnn%% *} $torch_cnn" \
           "resnet18_3x32 f32 $ours_rn $torch_rn" "resnet18_3x32 bf16 ${bf16_rn%% *} $torch_rn"; do
  set -- $row
  printf '%-28s %12.1f %10.1f %6.2fx\n' "$1 $2" "$3" "$4" "$(echo "$3 / $4" | bc -l)"
done
echo "(images/s at batch 64, 2 threads; PyTorch in float32. ONNX Runtime 1.30 reference"
echo " figures, 2 threads, float32: 7,724 and 440)"
echo "bf16 vs float32 outputs: smallcnn ${bf16_cnn#* }; resnet18 ${bf16_rn#* }"
