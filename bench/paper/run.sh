#!/usr/bin/env bash
# The paper's Table 1 and figure 7, reproduced: for each dataset, train an
# ArchNet key, encode the dataset with it, RC4-encrypt it (stream mode), then
# train the same classifier with the same recipe (bench/paper/paper_train:
# Adam 1e-3, batch 64, seed 1, and the model, standardisation, schedule and
# epochs below) on the original images (AO), the codes (AE) and the
# ciphertext (RC4), scoring each on its test split after every epoch.
#
#   bench/paper/run.sh [--quick] [--only NAME] [--cifar DIR] [--work DIR] [--out DIR]
#                      [--preset NAME] [--normalize MODE] [--schedule S] [--cnn-epochs N]
#
#   --quick      2,000 training images and 1 epoch everywhere: a smoke test
#   --only NAME  mnist, fmnist or cifar10
#   --cifar DIR  CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin, or
#                their cifar-10-batches-bin/ subfolder); skipped when absent
#   --work DIR   keys, encoded sets and logs (default /tmp/archnet-paper);
#                finished steps are not run again, so an interrupted run resumes
#   --out DIR    table.md, curves CSV and figure7.png (default bench/paper/out,
#                bench/paper/out-quick with --quick)
#   --preset NAME      the classifier (default cnn-patch-dropout: a 2x2
#                      stride-2 stem, then conv64-pool-conv64-pool-fc128,
#                      dropout 0.5, fc; cnn-small is the paper's
#                      conv32-pool-conv64-pool-fc128-fc)
#   --normalize MODE   image (default: subtract the training set's mean image,
#                      divide by each channel's std), channel, or none (the
#                      values as stored)
#   --schedule S       cosine (default: the learning rate cosine-annealed to 0
#                      over the run) or constant
#   --cnn-epochs N     classifier epochs for every dataset (default: MNIST 10,
#                      Fashion-MNIST 20, CIFAR-10 10)
#
# ARCHNET_PAPER_KEEP_ENC=1 in the environment keeps the encoded sets (for
# bench/paper/network.sh, which submits the MNIST one to a broker).
#
# The first run of issue 8 used --preset cnn-small --normalize none --schedule
# constant with the PyTorch reference's epochs (MNIST 3, Fashion-MNIST 5).
# ArchNet epochs: MNIST 1, Fashion-MNIST 3, CIFAR-10 3. The encoded sets
# (about 4.4 GB for MNIST in float16) are deleted once their classifier is done.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0 only="" cifar=../shared/datasets/cifar10 work=/tmp/archnet-paper out=""
classifier=cnn-patch-dropout normalize=image schedule=cosine cnn_epochs_opt=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --only) only=$2; shift ;;
    --cifar) cifar=$2; shift ;;
    --work) work=$2; shift ;;
    --out) out=$2; shift ;;
    --preset) classifier=$2; shift ;;
    --normalize) normalize=$2; shift ;;
    --schedule) schedule=$2; shift ;;
    --cnn-epochs) cnn_epochs_opt=$2; shift ;;
    *) echo "usage: bench/paper/run.sh [--quick] [--only mnist|fmnist|cifar10] [--cifar DIR] [--work DIR] [--out DIR]" \
         "[--preset NAME] [--normalize image|channel|none] [--schedule cosine|constant] [--cnn-epochs N]" >&2
       exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  limit=2000 work=$work-quick out=${out:-bench/paper/out-quick}
else
  limit=0 out=${out:-bench/paper/out}
fi
py=/usr/bin/python3 # Debian's, with numpy (not a pyenv one)

if [ -f build-rel/build.ninja ]; then
  meson configure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
else
  meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
fi
meson compile -C build-rel publisher/archnet-publisher bench/paper_train bench/paper_plot >/dev/null
publisher=build-rel/publisher/archnet-publisher
trainer=build-rel/bench/paper_train
mkdir -p "$work" "$out"

# timed NAME CMD...: runs CMD unless $step_dir/NAME.seconds exists (a finished
# step), logging to NAME.log and recording the wall-clock seconds.
timed() {
  local name=$1; shift
  [ -f "$step_dir/$name.seconds" ] && { echo "  $name: done before ($(cat "$step_dir/$name.seconds") s)"; return; }
  echo "  $name: $*"
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@" >"$step_dir/$name.log" 2>&1; then
    echo "bench/paper/run.sh: $name failed; see $step_dir/$name.log:" >&2
    tail -5 "$step_dir/$name.log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  printf '%.0f\n' "$(echo "$t1 - $t0" | bc -l)" >"$step_dir/$name.seconds"
  echo "  $name: $(cat "$step_dir/$name.seconds") s"
}

# run_dataset NAME LABEL DATA PRESET KEY_EPOCHS CNN_EPOCHS
run_dataset() {
  local name=$1 label=$2 data=$3 preset=$4 key_epochs=$5 cnn_epochs=$6
  [ -n "$cnn_epochs_opt" ] && cnn_epochs=$cnn_epochs_opt
  [ "$quick" = 1 ] && key_epochs=1 cnn_epochs=1
  step_dir=$work/$name
  mkdir -p "$step_dir"
  echo "$label: $data, ArchNet $key_epochs epoch(s), CNN $cnn_epochs epoch(s)"
  local lim=()
  [ "$limit" -gt 0 ] && lim=(--limit "$limit")
  timed key "$publisher" train --preset "$preset" --data "$data" --out "$step_dir/key" \
    --epochs "$key_epochs" "${lim[@]}" --force
  [ -f "$step_dir/ae.seconds" ] ||
    timed encode "$publisher" encode --key "$step_dir/key" --data "$data" --out "$step_dir/enc" \
      --dtype f16 --with-test "${lim[@]}"
  [ -f "$step_dir/rc4.seconds" ] ||
    timed rc4-encrypt "$publisher" baseline rc4 --data "$data" --out "$step_dir/rc4" \
      --key 0102030405 --mode stream --dtype f16 "${lim[@]}"
  local recipe=(--preset "$classifier" --normalize "$normalize" --schedule "$schedule"
                --epochs "$cnn_epochs")
  timed ao nice -n 10 "$trainer" --raw "$data" "${lim[@]}" "${recipe[@]}" --curve "$step_dir/ao.csv"
  timed ae nice -n 10 "$trainer" --data "$step_dir/enc" "${recipe[@]}" --curve "$step_dir/ae.csv"
  [ "${ARCHNET_PAPER_KEEP_ENC:-0}" = 1 ] || rm -rf "$step_dir/enc"
  timed rc4 nice -n 10 "$trainer" --data "$step_dir/rc4" "${recipe[@]}" --curve "$step_dir/rc4.csv"
  rm -rf "$step_dir/rc4"
  echo "$label $key_epochs $cnn_epochs $classifier $normalize $schedule" >"$step_dir/info"
}

if [ -z "$only" ] || [ "$only" = mnist ]; then
  run_dataset mnist MNIST ../shared/datasets/mnist archnet-mnist 1 10
fi
if [ -z "$only" ] || [ "$only" = fmnist ]; then
  run_dataset fmnist Fashion-MNIST /usr/share/datasets/fashion-mnist archnet-mnist 3 20
fi
cifar_note=""
if [ -z "$only" ] || [ "$only" = cifar10 ]; then
  if [ -f "$cifar/data_batch_1.bin" ] || [ -f "$cifar/cifar-10-batches-bin/data_batch_1.bin" ]; then
    run_dataset cifar10 CIFAR-10 "$cifar" archnet-cifar10 3 10
  else
    cifar_note="CIFAR-10: skipped, no binary batches in $cifar (give --cifar DIR)."
    echo "$cifar_note"
  fi
fi

# The table (markdown) and the figure, from every dataset finished in $work
# (by this run or an earlier one).
finished=()
for name in mnist fmnist cifar10; do
  [ -f "$work/$name/info" ] || continue
  finished+=("$name")
  for c in ao ae rc4; do cp "$work/$name/$c.csv" "$out/$name-$c.csv"; done
done
[ ${#finished[@]} -gt 0 ] || { echo "bench/paper/run.sh: no dataset finished" >&2; exit 1; }
"$py" - "$work" "$out/table.md" "$quick" "$cifar_note" "${finished[@]}" <<'PY'
import csv, json, os, sys
work, table, quick, note = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
finished = sys.argv[5:]
def last_acc(d, c):
    rows = list(csv.DictReader(open(os.path.join(d, c + ".csv"))))
    return float(rows[-1]["test_accuracy"])
def secs(d, step):
    p = os.path.join(d, step + ".seconds")
    return int(open(p).read()) if os.path.exists(p) else None
lines = ["| dataset | ArchNet epochs | CNN epochs | key PSNR (dB) | AO (%) | AE (%) | EC | RC4 (%) |",
         "|---|---|---|---|---|---|---|---|"]
times = ["| dataset | key | encode | RC4 encrypt | AO | AE | RC4 |", "|---|---|---|---|---|---|---|"]
for name in finished:
    d = os.path.join(work, name)
    label, ke, ce = open(os.path.join(d, "info")).read().split()[:3]
    psnr = json.load(open(os.path.join(d, "key", "manifest.json")))["reconstruction"]["psnr_db"]
    ao, ae, rc4 = (last_acc(d, c) for c in ("ao", "ae", "rc4"))
    ec = (ao - ae) / ao * 100
    lines.append(f"| {label} | {ke} | {ce} | {psnr:.2f} | {ao:.2f} | {ae:.2f} | {ec:.2f}% | {rc4:.2f} |")
    fmt = lambda s: "—" if s is None else f"{s} s"
    times.append(f"| {label} | " + " | ".join(fmt(secs(d, s)) for s in
                 ("key", "encode", "rc4-encrypt", "ao", "ae", "rc4")) + " |")
text = "\n".join(lines) + "\n\nWall-clock time of each step:\n\n" + "\n".join(times) + "\n"
if quick:
    text = "Quick run (--quick: 2,000 training images, 1 epoch): a smoke test, not the result.\n\n" + text
if note:
    text += "\n" + note + "\n"
open(table, "w").write(text)
print(text)
PY

curves=()
for name in "${finished[@]}"; do
  read -r label _ <"$work/$name/info"
  curves+=("$label" "$out/$name-ao.csv" "$out/$name-ae.csv" "$out/$name-rc4.csv")
done
build-rel/bench/paper_plot --out "$out/figure7.png" "${curves[@]}"
echo "figure: $out/figure7.png"
