#!/usr/bin/env bash
# Builds the ONNX libFuzzer target with clang and runs it from the
# conformance PyTorch exports and the regression seeds. Exit status non-zero
# on any finding.
#
#   tests/fuzz/run.sh BUILD_DIR [RUNS]   (BUILD_DIR holds proto/onnx.pb-c.c)
#
# A fixed seed and a fixed number of runs make the test repeatable (CI sees
# what a developer saw); a time cap keeps it bounded on a slow machine. For
# open-ended fuzzing, run the binary by hand (tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:?usage: tests/fuzz/run.sh BUILD_DIR [RUNS]}
runs=${2:-150000}
seeds=../shared/conformance/torch-exports
out=$(mktemp -d /tmp/archnet-fuzz-XXXXXX)
trap 'rm -rf "$out"' EXIT

# The runtime's sources: everything in common/nn/onnx but the writer.
runtime=$(ls common/nn/onnx/*.c | grep -v '/export\.c$')
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -D_GNU_SOURCE -I"$PWD" -I"$build" \
  tests/fuzz/fuzz_onnx.c $runtime common/nn/engine.c \
  common/arena.c common/error.c "$build/proto/onnx.pb-c.c" \
  -lprotobuf-c -ldnnl -luv -lm -o "$out/fuzz_onnx"
mkdir -p "$out/corpus" "$out/artifacts"
echo "fuzzing the ONNX loader and runtime: $runs inputs, seed 1" >&2
if ! OMP_NUM_THREADS=1 "$out/fuzz_onnx" -seed=1 -runs="$runs" -max_total_time=300 -max_len=1048576 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/artifacts/" \
    "$out/corpus" "$seeds" tests/fuzz/regressions >"$out/log" 2>&1; then
  tail -60 "$out/log" >&2
  mkdir -p fuzz-findings && cp "$out"/artifacts/* fuzz-findings/ 2>/dev/null || true
  echo "fuzz: FAILED (inputs kept in fuzz-findings/)" >&2
  exit 1
fi
grep -E "^#[0-9]+.*(DONE|pulse)" "$out/log" | tail -1 >&2 || true
echo "fuzz: no crash, leak or hang in $runs inputs" >&2
