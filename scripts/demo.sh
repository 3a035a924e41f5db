#!/usr/bin/env bash
# The whole system on loopback: a broker, a publisher and two workers.
#
#   scripts/demo.sh BUILD_DIR [--images N] [--full] [--keep DIR] [--epochs N]
#                   [--key-epochs N] [--key-spec FILE]
#
# The publisher trains ArchNet on MNIST (N training images, default 6,000;
# --full: all 60,000), encodes them, and submits a task with a bounty; two
# workers compete for it; the broker scores the returned model on the
# validation part only it holds and pays the winner; the publisher fetches
# the model and classifies raw MNIST test images through its H-encoder and
# the model. Ends with a summary (also in DIR/summary.txt with --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:?usage: scripts/demo.sh BUILD_DIR [--images N] [--full] [--keep DIR]}
shift
images=6000 keep= test_images=2000 epochs=3 key_epochs=3 key_model=(--preset archnet-mnist)
while [ $# -gt 0 ]; do
  case $1 in
    --images) images=$2; shift 2 ;;
    --full) images=60000 test_images=10000 key_epochs=1; shift ;;
    --keep) keep=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --key-epochs) key_epochs=$2; shift 2 ;;
    --key-spec) key_model=(--spec "$2"); shift 2 ;;
    *) echo "scripts/demo.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mnist=../shared/datasets/mnist
[ -f "$mnist/train-images-idx3-ubyte.gz" ] || mnist=/usr/share/datasets/mnist
[ -f "$mnist/train-images-idx3-ubyte.gz" ] ||
  { echo "scripts/demo.sh: MNIST not found in ../shared/datasets/mnist" >&2; exit 1; }

B=$build/server/archnet-broker P=$build/publisher/archnet-publisher W=$build/worker/archnet-worker
if [ -n "$keep" ]; then
  dir=$keep
  rm -rf "$dir"
  mkdir -p "$dir"
else
  dir=$(mktemp -d /tmp/archnet-demo-XXXXXX)
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$keep" ] || rm -rf "$dir"
}
trap cleanup EXIT
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t0=$(date +%s)

say "broker: identity, then listening on a free loopback port"
$B init --data-dir "$dir/broker" >/dev/null
pin=$($B pin --data-dir "$dir/broker")
$B run --data-dir "$dir/broker" --listen 127.0.0.1:0 --ready-file "$dir/ready" \
  --fee-permille 50 --min-free-disk 256M --http-listen 127.0.0.1:0 \
  --http-ready-file "$dir/http-ready" 2>"$dir/broker.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/ready" ] && break; sleep 0.1; done
[ -s "$dir/ready" ] || { cat "$dir/broker.log" >&2; echo "the broker did not start" >&2; exit 1; }
addr=$(cat "$dir/ready")
http=$(cat "$dir/http-ready" 2>/dev/null || true)

say "the operator enrolls a publisher and two workers, and funds the publisher"
token() { $B enroll --data-dir "$dir/broker" --role "$1" 2>/dev/null; }
$P enroll --broker "$addr" --pin "$pin" --token "$(token publisher)" --name owner \
  --credentials "$dir/publisher.credentials"
$W enroll --broker "$addr" --pin "$pin" --token "$(token worker)" --name volunteer-1 \
  --credentials "$dir/worker1.credentials"
$W enroll --broker "$addr" --pin "$pin" --token "$(token worker)" --name volunteer-2 \
  --credentials "$dir/worker2.credentials"
$B topup --data-dir "$dir/broker" 1 10000

say "publisher: training ArchNet (${key_model[*]}) on $images MNIST images: the secret key"
$P train "${key_model[@]}" --data "$mnist" --out "$dir/key" --limit "$images" \
  --epochs "$key_epochs" --batch $(( images >= 60000 ? 256 : 64 )) --eval-images 1000 \
  | tee "$dir/train.txt"
say "publisher: encoding them with the H-encoder"
$P encode --key "$dir/key" --data "$mnist" --out "$dir/encoded" --limit "$images" \
  | tee "$dir/encode.txt"
say "publisher: submitting the encoded data with a bounty of 1000 credits"
$P submit --credentials "$dir/publisher.credentials" --data "$dir/encoded" --bounty 1000 \
  --min-accuracy 0.8 --lease-seconds 120

say "two workers compete for the task"
workers=()
for i in 1 2; do
  $W run --credentials "$dir/worker$i.credentials" --cache "$dir/worker$i" --wait 5 \
    --max-tasks 1 --exit-when-idle --epochs "$epochs" 2>"$dir/worker$i.log" &
  pids+=($!) workers+=($!)
done
task=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["task_id"])' \
  "$dir/encoded/task.json")
for _ in $(seq 1800); do
  state=$($P status "$task" --credentials "$dir/publisher.credentials" | head -1 | awk '{print $3}')
  case $state in accepted|delivered|failed|cancelled) break ;; esac
  alive=0
  for p in "${workers[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 1 ] || break # both workers are done and nobody else will come
  sleep 1
done
for i in 1 2; do sed "s/^/  [worker $i] /" "$dir/worker$i.log" | grep -v '% trained' >&2 || true; done
$P status "$task" --credentials "$dir/publisher.credentials"
[ "$state" = accepted ] || { echo "the task ended $state" >&2; exit 1; }

say "publisher: fetching the model and classifying raw test images"
$P fetch "$task" --credentials "$dir/publisher.credentials" --out "$dir/model.onnx"
$P predict --key "$dir/key" --model "$dir/model.onnx" --data "$mnist" --encoding "$dir/encoded" \
  --limit "$test_images" | tee "$dir/predict.txt"
$B ledger --data-dir "$dir/broker" --check >"$dir/ledger.txt"

psnr=$(sed -n 's/.*PSNR \([0-9.]*\) dB.*/\1/p' "$dir/train.txt")
acc=$(sed -n 's/^accuracy \([0-9.]*\)%.*/\1/p' "$dir/predict.txt")
paid=$($B nodes --data-dir "$dir/broker" | awk '$2 == "worker" && $5 > 0 {print $3 " was paid " $5 " credits"}')
{
  echo "ArchNet demo summary"
  echo "  key: ArchNet (${key_model[*]}) trained on $images MNIST images, reconstruction PSNR $psnr dB on held-out images"
  echo "  accuracy on $test_images original MNIST test images (H-encoder + the workers' model): $acc%"
  echo "  payment: $paid (bounty 1000, broker fee 5%)"
  echo "  $(cat "$dir/ledger.txt")"
  [ -n "$http" ] && echo "  dashboard: http://$http/ (while the broker runs; --keep DIR keeps the files)"
  echo "  took $(( $(date +%s) - t0 )) s"
} | tee "$dir/summary.txt"
