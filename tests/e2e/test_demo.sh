#!/usr/bin/env bash
# End to end (meson suite e2e): the demo at a small size with this build's
# programs, then assertions on its summary: the accuracy on original MNIST
# test images through the H-encoder and the returned model is above a floor,
# exactly one worker was paid (bounty 1000 minus the 5% fee), and the
# ledger's invariants hold.
#
#   tests/e2e/test_demo.sh BUILD_DIR SOURCE_ROOT
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$2"
dir=$(mktemp -d /tmp/archnet-e2e-XXXXXX)
trap 'rm -rf "$dir"' EXIT
# A small ArchNet-shaped key (1x28x28 -> 4x56x56) keeps the sanitized build
# fast; the paper's preset runs the same code in the README's demo.
cat >"$dir/key.spec" <<'SPEC'
input 1 28 28
conv 8 k=3 p=1
relu
code: convt 4 k=2 s=2
conv 8 k=2 s=2
relu
conv 1 k=3 p=1
SPEC
scripts/demo.sh "$build" --images 3000 --key-spec "$dir/key.spec" --key-epochs 2 \
  --epochs 2 --keep "$dir/run"
summary=$dir/run/summary.txt
acc=$(sed -n 's/.*H-encoder + the workers. model): \([0-9.]*\)%.*/\1/p' "$summary")
paid=$(grep -c "was paid 950 credits" "$summary" || true)
fail=0
awk -v a="$acc" 'BEGIN { exit !(a >= 80) }' || { echo "FAIL: accuracy $acc% below 80%"; fail=1; }
[ "$paid" = 1 ] || { echo "FAIL: expected exactly one payout of 950 credits"; fail=1; }
grep -q "ledger check: ok" "$summary" || { echo "FAIL: ledger check"; fail=1; }
[ "$(grep -c ' worker ' <("$build/server/archnet-broker" nodes --data-dir "$dir/run/broker"))" = 2 ] ||
  { echo "FAIL: two workers expected"; fail=1; }
cat "$summary"
exit $fail
