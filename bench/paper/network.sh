#!/usr/bin/env bash
# Table 1's AE row through the network: a broker on loopback, the publisher
# submitting an encoded MNIST set (the one bench/paper/run.sh made, kept
# with ARCHNET_PAPER_KEEP_ENC=1) with a bounty, one worker training with
# run.sh's recipe in its built-in trainer, the broker scoring the returned
# ONNX model on the validation part only it holds and paying the worker.
# Then the publisher fetches the model and scores it on the raw MNIST test
# images through its H-encoder, the same 10,000 images as the offline AE.
#
#   bench/paper/network.sh [--enc DIR] [--work DIR] [--epochs N] [--preset NAME]
#                          [--normalize MODE] [--schedule S] [--min-accuracy A] [--build DIR]
#
#   --enc DIR        the encoded set: train_x/train_y/val_x/val_y.npy and
#                    encoding.json, with its key in DIR/../key (default
#                    /tmp/archnet-paper/mnist/enc)
#   --work DIR       broker state, credentials, worker cache, logs and the
#                    summary (default /tmp/archnet-paper-network; emptied first)
#   --epochs N, --preset NAME, --normalize MODE, --schedule S
#                    the worker's recipe (default run.sh's for MNIST: 10,
#                    cnn-patch-dropout, image, cosine; Adam 1e-3, batch 64, seed 1,
#                    float32 products as paper_train)
#   --min-accuracy A the task's acceptance threshold (default 0.9)
#   --build DIR      a build with the three programs (default build-rel,
#                    configured and compiled as run.sh does)
#
# Prints, and writes to WORK/summary.txt, the broker's validation accuracy,
# the fetched model's test accuracy and the offline AE of run.sh (its
# ae.csv next to --enc, when present).
set -euo pipefail
cd "$(dirname "$0")/../.."

enc=/tmp/archnet-paper/mnist/enc work=/tmp/archnet-paper-network build=build-rel
epochs=10 preset=cnn-patch-dropout normalize=image schedule=cosine min_accuracy=0.9
while [ $# -gt 0 ]; do
  case $1 in
    --enc) enc=$2; shift ;;
    --work) work=$2; shift ;;
    --epochs) epochs=$2; shift ;;
    --preset) preset=$2; shift ;;
    --normalize) normalize=$2; shift ;;
    --schedule) schedule=$2; shift ;;
    --build) build=$2; shift ;;
    --min-accuracy) min_accuracy=$2; shift ;;
    *) echo "usage: bench/paper/network.sh [--enc DIR] [--work DIR] [--epochs N] [--preset NAME]" \
         "[--normalize MODE] [--schedule S] [--min-accuracy A] [--build DIR]" >&2
       exit 2 ;;
  esac
  shift
done
[ -f "$enc/train_x.npy" ] && [ -f "$enc/val_x.npy" ] ||
  { echo "bench/paper/network.sh: no encoded set in $enc (run ARCHNET_PAPER_KEEP_ENC=1 bench/paper/run.sh --only mnist)" >&2; exit 1; }
key=$(dirname "$enc")/key
mnist=../shared/datasets/mnist

if [ "$build" = build-rel ]; then
  if [ -f build-rel/build.ninja ]; then
    meson configure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
  else
    meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
  fi
  meson compile -C build-rel server/archnet-broker publisher/archnet-publisher \
    worker/archnet-worker >/dev/null
fi
B=$build/server/archnet-broker P=$build/publisher/archnet-publisher W=$build/worker/archnet-worker

rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
say() { printf '==> %s\n' "$*" >&2; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t0=$(date +%s)

say "broker on a free loopback port"
$B init --data-dir "$work/broker" >/dev/null
pin=$($B pin --data-dir "$work/broker")
$B run --data-dir "$work/broker" --listen 127.0.0.1:0 --ready-file "$work/ready" \
  --fee-permille 50 --min-free-disk 1G --http-listen "" 2>"$work/broker.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
[ -s "$work/ready" ] || { cat "$work/broker.log" >&2; echo "the broker did not start" >&2; exit 1; }
addr=$(cat "$work/ready")
token() { $B enroll --data-dir "$work/broker" --role "$1" 2>/dev/null; }
$P enroll --broker "$addr" --pin "$pin" --token "$(token publisher)" --name owner \
  --credentials "$work/publisher.credentials"
$W enroll --broker "$addr" --pin "$pin" --token "$(token worker)" --name volunteer \
  --credentials "$work/worker.credentials"
$B topup --data-dir "$work/broker" 1 10000

say "publisher: submitting $enc with a bounty of 1000 credits"
rm -f "$enc/task.json" # an earlier run's task, on a broker that is gone
t_submit=$(date +%s)
$P submit --credentials "$work/publisher.credentials" --data "$enc" --bounty 1000 \
  --min-accuracy "$min_accuracy" --lease-seconds 600 | tee "$work/submit.txt"
t_uploaded=$(date +%s)
task=$(sed -n 's/^task \([0-9]*\) created.*/\1/p' "$work/submit.txt" | head -1)
[ -n "$task" ] || task=1

say "worker: $preset, --normalize $normalize, --schedule $schedule, $epochs epochs"
nice -n 10 $W run --credentials "$work/worker.credentials" --cache "$work/worker" --wait 5 \
  --max-tasks 1 --exit-when-idle --preset "$preset" --normalize "$normalize" \
  --schedule "$schedule" --epochs "$epochs" --batch 64 --lr 1e-3 --optimizer adam --seed 1 \
  --precision f32 2>"$work/worker.log" &
wpid=$!
pids+=($wpid)
state=""
while :; do
  state=$($P status "$task" --credentials "$work/publisher.credentials" | head -1 | awk '{print $3}')
  case $state in accepted|delivered|failed|cancelled) break ;; esac
  kill -0 "$wpid" 2>/dev/null || { sleep 2; state=$($P status "$task" \
    --credentials "$work/publisher.credentials" | head -1 | awk '{print $3}'); break; }
  sleep 5
done
t_done=$(date +%s)
grep -v '% trained' "$work/worker.log" | sed 's/^/  [worker] /' >&2 || true
$P status "$task" --credentials "$work/publisher.credentials" | tee "$work/status.txt"
[ "$state" = accepted ] || { echo "the task ended $state" >&2; exit 1; }
$B tasks --data-dir "$work/broker" >"$work/tasks.txt"
$B ledger --data-dir "$work/broker" --check >"$work/ledger.txt"

say "publisher: fetching the model and scoring it on the raw MNIST test images"
$P fetch "$task" --credentials "$work/publisher.credentials" --out "$work/model.onnx" |
  tee "$work/fetch.txt"
$P predict --key "$key" --model "$work/model.onnx" --data "$mnist" --encoding "$enc" \
  | tee "$work/predict.txt"

broker_acc=$(sed -n 's/.*accuracy \([0-9.]*\).*/\1/p' "$work/status.txt" | head -1)
test_acc=$(sed -n 's/^accuracy \([0-9.]*\)%.*/\1/p' "$work/predict.txt")
val_n=$(/usr/bin/python3 -c 'import numpy, sys; print(numpy.load(sys.argv[1], mmap_mode="r").shape[0])' \
  "$enc/val_y.npy")
offline=""
ae_csv=$(dirname "$enc")/ae.csv
[ -f "$ae_csv" ] && offline=$(printf '%.2f' "$(tail -1 "$ae_csv" | cut -d, -f4)")
{
  echo "ArchNet network run (bench/paper/network.sh)"
  echo "  recipe: $preset, --normalize $normalize, --schedule $schedule, $epochs epochs, Adam 1e-3, batch 64, seed 1, f32"
  echo "  broker-scored validation accuracy ($val_n images only the broker holds): $(/usr/bin/python3 -c "print(f'{100 * $broker_acc:.2f}')")%"
  echo "  the fetched model on the 10,000 raw MNIST test images (H-encoder + model): $test_acc%"
  [ -n "$offline" ] && echo "  offline AE (bench/paper/paper_train, same recipe, same test images): $offline%"
  echo "  $(cat "$work/ledger.txt")"
  echo "  upload $(( t_uploaded - t_submit )) s, lease to verdict $(( t_done - t_uploaded )) s, all $(( $(date +%s) - t0 )) s"
} | tee "$work/summary.txt"
