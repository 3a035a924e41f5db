#!/usr/bin/env bash
# archnet-broker under load, on loopback: lease cycles per second, idle and
# long-polling sessions with the broker's memory per session, lease latency,
# and upload throughput of a large blob.
#
#   bench/broker.sh        (from anywhere; about 3 minutes)
#
# It builds build-rel (release, tests off), starts a broker in a temporary
# directory on disk (durable commits, as in production), enrolls a publisher
# and workers through their programs, runs build-rel/bench/broker_load, and
# prints a Markdown table. A second broker on tmpfs (/dev/shm, where fsync
# costs nothing) repeats the lease cycles to show what the disk costs. Every
# process and directory it made is removed on exit.
#
# Knobs (environment): WORKERS (8), MANY_WORKERS (64), TASKS (1500),
# MANY_TASKS (6000), FULL_TASKS (200), IDLE_COUNTS (1000,10000),
# UPLOAD_SIZE (1G), CHUNKS (1M,4M,16M).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-8}
MANY_WORKERS=${MANY_WORKERS:-64}
TASKS=${TASKS:-1500}
MANY_TASKS=${MANY_TASKS:-6000}
FULL_TASKS=${FULL_TASKS:-200}
IDLE_COUNTS=${IDLE_COUNTS:-1000,10000}
UPLOAD_SIZE=${UPLOAD_SIZE:-1G}
CHUNKS=${CHUNKS:-1M,4M,16M}

if [ -f build-rel/build.ninja ]; then
  # --reconfigure: meson compile only knows targets added since the last setup after it
  meson setup --reconfigure build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
else
  meson setup build-rel -Dbuildtype=release -Dtests=disabled >/dev/null
fi
meson compile -C build-rel server/archnet-broker publisher/archnet-publisher \
  worker/archnet-worker bench/broker_load >/dev/null
bin=$PWD/build-rel
broker_bin=$bin/server/archnet-broker
load=$bin/bench/broker_load

# One descriptor per session on both sides: as many as the hard limit allows.
ulimit -n "$(ulimit -Hn)"

disk_dir=$(mktemp -d /var/tmp/archnet-broker-bench.XXXXXX)
shm_dir=$(mktemp -d /dev/shm/archnet-broker-bench.XXXXXX)
broker_pid=
stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
cleanup() {
  stop_broker
  rm -rf "$disk_dir" "$shm_dir"
}
trap cleanup EXIT

# start_broker DIR: a broker with its data in DIR/data, listening on a free
# loopback port; sets broker_pid, address and pin.
start_broker() {
  local dir=$1
  "$broker_bin" init --data-dir "$dir/data" >/dev/null
  pin=$("$broker_bin" pin --data-dir "$dir/data")
  # warn: the per-lease info lines would be part of what is measured.
  "$broker_bin" run --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --ready-file "$dir/ready" --http-listen "" --log-level warn \
    --max-sessions 12000 --max-frame 32M --min-free-disk 0 --max-wait 600 \
    --score-wall 60 2>"$dir/broker.log" &
  broker_pid=$!
  for _ in $(seq 100); do
    [ -s "$dir/ready" ] && break
    sleep 0.1
  done
  if [ ! -s "$dir/ready" ]; then
    echo "the broker did not start:" >&2
    cat "$dir/broker.log" >&2
    exit 1
  fi
  address=$(cat "$dir/ready")
}

# enroll DIR ROLE NAME: a node enrolled through its own program; prints the
# path of its credentials file.
enroll() {
  local dir=$1 role=$2 name=$3 token
  # stdout is the token alone; stderr tells a person what to do with it
  token=$("$broker_bin" enroll --data-dir "$dir/data" --role "$role" 2>/dev/null)
  "$bin/$role/archnet-$role" enroll --broker "$address" --pin "$pin" --token "$token" \
    --credentials "$dir/$name.credentials" --name "$name" >/dev/null
  echo "$dir/$name.credentials"
}

# setup_nodes DIR: a funded publisher and $MANY_WORKERS workers; sets
# publisher, workers (the first $WORKERS credentials files, comma-separated)
# and many_workers (all of them).
setup_nodes() {
  local dir=$1 node
  publisher=$(enroll "$dir" publisher pub)
  node=$(sed -n 's/.*"node_id": *\([0-9]*\).*/\1/p' "$publisher")
  "$broker_bin" topup --data-dir "$dir/data" "$node" 1000000000 >/dev/null
  workers= many_workers=
  for i in $(seq "$MANY_WORKERS"); do
    many_workers=${many_workers:+$many_workers,}$(enroll "$dir" worker "w$i")
    [ "$i" -eq "$WORKERS" ] && workers=$many_workers
  done
  [ -n "$workers" ] || workers=$many_workers
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "| what | value | detail |"
echo "|---|---:|---|"
"$load" disk --dir "$disk_dir"

# The figures that matter: every commit durable (synchronous=FULL) on disk.
work=$disk_dir/work
start_broker "$disk_dir"
setup_nodes "$disk_dir"
"$load" cycles --label durable --publisher "$publisher" --workers "${workers%%,*}" \
  --work "$work" --tasks 300 --seconds 10 --broker-pid "$broker_pid"
"$load" cycles --label durable --publisher "$publisher" --workers "$workers" \
  --work "$work" --tasks "$TASKS" --seconds 30 --broker-pid "$broker_pid"
# Many workers at once: their requests share the group commits (one fsync
# per turn of the broker's loop).
"$load" cycles --label durable --publisher "$publisher" --workers "$many_workers" \
  --work "$work" --tasks "$MANY_TASKS" --seconds 30 --broker-pid "$broker_pid"
"$load" cycles --label durable --publisher "$publisher" --workers "$workers" \
  --work "$work" --tasks "$FULL_TASKS" --seconds 60 --models --broker-pid "$broker_pid"
"$load" upload --publisher "$publisher" --work "$work" --size "$UPLOAD_SIZE" \
  --chunks "$CHUNKS" --broker-pid "$broker_pid"
# Last on this broker: its heap keeps what 10,000 sessions took.
idler=$(enroll "$disk_dir" worker idler)
"$load" idle --worker "$idler" --publisher "$publisher" --work "$work" \
  --broker-pid "$broker_pid" --counts "$IDLE_COUNTS"
stop_broker

# The same on tmpfs, where fsync returns at once: what the disk costs. The
# client's files stay on disk (only the broker's data directory moves).
start_broker "$shm_dir"
setup_nodes "$shm_dir"
"$load" cycles --label "tmpfs (not durable)" --publisher "$publisher" --workers "$workers" \
  --work "$work" --tasks "$TASKS" --seconds 30 --broker-pid "$broker_pid"
"$load" cycles --label "tmpfs (not durable)" --publisher "$publisher" --workers "$many_workers" \
  --work "$work" --tasks "$MANY_TASKS" --seconds 30 --broker-pid "$broker_pid"
"$load" cycles --label "tmpfs (not durable)" --publisher "$publisher" --workers "$workers" \
  --work "$work" --tasks "$FULL_TASKS" --seconds 60 --models --broker-pid "$broker_pid"
"$load" upload --publisher "$publisher" --work "$work" --size "$UPLOAD_SIZE" \
  --chunks "${CHUNKS%,*}" --broker-pid "$broker_pid" | sed 's/^| /| tmpfs (not durable): /'
stop_broker
echo
echo "(loopback; $(nproc) cores shared by the broker, this generator, the scoring children"
echo " and whatever else runs: load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg)"
echo " after; the broker logs at warn)"
