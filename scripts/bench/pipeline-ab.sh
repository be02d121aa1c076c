#!/usr/bin/env bash
# Two builds of the server compared on the same events, runs interleaved
# (A, B, A, B, ...) so that a change in the machine's speed falls on both:
# each run produces EVENTS into a fresh embedded data directory, starts
# `serve`, and times it until every event is applied. Prints, per run, the
# binary, seconds, events/s, the server's CPU seconds and its store writer
# thread's. Make EVENTS with the generator in scripts/bench/pipeline.sh:
#   awk '/^python3 - "\$N" "\$SHAPE"/{f=1; next} /^PY$/{f=0} f' scripts/bench/pipeline.sh > gen.py
#   python3 gen.py 200000 shop > events.jsonl
# Usage: scripts/bench/pipeline-ab.sh BIN_A BIN_B EVENTS [PAIRS]
set -euo pipefail
A=$1 B=$2 EVENTS=$3 PAIRS=${4:-5}
N=$(wc -l < "$EVENTS")
HZ=$(getconf CLK_TCK)
run() {
  local bin=$1 data port start pid secs cpu writer
  data=$(mktemp -d)
  export SHOPSTREAM_DATA_DIR="$data" SHOPSTREAM_LOG=warn SHOPSTREAM_LOG_PARTITIONS=4 SHOPSTREAM_SEED_DEMO_CATALOGUE=false
  "$bin" produce --file "$EVENTS" --batch 5000 >/dev/null
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start=$(date +%s.%N)
  SHOPSTREAM_LISTEN="127.0.0.1:$port" "$bin" serve >"$data/out.log" 2>"$data/err.log" &
  pid=$!
  until [ "$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^shopstream_events_applied_total/ {s += $2} END {print s + 0}')" -ge "$N" ]; do
    sleep 0.05
  done
  secs=$(python3 -c "import time; print(time.time() - $start)")
  cpu=$(awk -v hz="$HZ" '{print ($14 + $15) / hz}' "/proc/$pid/stat")
  writer=$(for t in /proc/$pid/task/*; do
    if grep -q store-writer "$t/comm"; then awk -v hz="$HZ" '{print ($14 + $15) / hz}' "$t/stat"; fi
  done)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  python3 -c "print('$bin', round($secs, 3), 's', round($N / $secs), 'events/s, CPU', $cpu, 's, writer', ${writer:-0}, 's')"
}
for _ in $(seq "$PAIRS"); do
  run "$A"
  run "$B"
done
