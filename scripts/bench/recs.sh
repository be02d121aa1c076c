#!/usr/bin/env bash
# The recommender at shop scale, over HTTP: ITEMS products (created through
# the API, 100 per category, each with stock) and INTERACTIONS views by
# 50,000 anonymous sessions put on the embedded log, applied by the
# pipeline, the model trained on them (POST /api/admin/model/train), then
# GET /api/recommendations?limit=20 under wrk load as random sessions (each
# answer ranks the model's candidates for that session's history and applies
# the live rules: catalogue, stock, per-category cap).
# Usage: scripts/bench/recs.sh [items] [interactions] [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
ITEMS=${1:-100000}
N=${2:-1000000}
CONNS=${3:-32}
SECS=${4:-20}
command -v wrk >/dev/null || { echo "recs.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
# BENCH_DIR keeps the data directory (and reuses it when it holds a finished
# run: only training and the load test run again).
DATA=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DATA"
PID=0
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; [ -n "${BENCH_DIR:-}" ] || rm -rf "$DATA"' EXIT
export SHOPSTREAM_DATA_DIR="$DATA/store" SHOPSTREAM_LOG=warn SHOPSTREAM_SEED_DEMO_CATALOGUE=false \
  SHOPSTREAM_RECOMMENDER_TRAIN_SECS=0 SHOPSTREAM_RECOMMENDER_RETRAIN_EVENTS=0 \
  SHOPSTREAM_ADMIN_EMAIL=bench@example.com SHOPSTREAM_ADMIN_PASSWORD='bench password 123'
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SHOPSTREAM_LISTEN="127.0.0.1:$PORT"
BASE="http://127.0.0.1:$PORT"
now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import time; print(round(time.time() - $1, 1))"; }
serve() {
  ./target/release/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
  PID=$!
  for _ in $(seq 1 300); do grep -q listening "$DATA/out.log" 2>/dev/null && return; sleep 0.1; done
  echo "the server did not start:" >&2; cat "$DATA/err.log" >&2; exit 1
}
login() {
  curl -sf "$BASE/api/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench password 123"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
if [ -f "$DATA/done" ]; then
  serve
else
serve
python3 scripts/bench/recs_data.py "$BASE" "$(login)" "$ITEMS" "$N" "$DATA/events.jsonl" "$DATA/sessions.txt"
kill $PID; wait $PID 2>/dev/null || true
start=$(now)
./target/release/shopstream produce --file "$DATA/events.jsonl" --batch 5000 >/dev/null
echo "produce: $((ITEMS + N)) events appended in $(since "$start") s"
start=$(now)
serve
TOTAL=$((ITEMS + N))
while true; do
  applied=$(curl -s "$BASE/metrics" 2>/dev/null | awk '/^shopstream_events_applied_total/ {s += $2} END {print s + 0}' || true)
  [ "$applied" -ge "$TOTAL" ] && break
  sleep 1
done
echo "pipeline: $TOTAL events applied in $(since "$start") s"
touch "$DATA/done"
fi
TOKEN=$(login)
start=$(now)
curl -sf -X POST "$BASE/api/admin/model/train" -H "authorization: Bearer $TOKEN" |
  python3 -c 'import json,sys; m = json.load(sys.stdin); print("model:", {k: m.get(k) for k in ("version", "interactions", "items", "training_ms")})'
echo "train (the request: reading the interaction log and the catalogue, fitting, saving): $(since "$start") s"

S=$(head -1 "$DATA/sessions.txt")
curl -sf "$BASE/api/recommendations?limit=20" -H "X-Session-Id: $S" |
  python3 -c 'import json,sys; r = json.load(sys.stdin); print("one answer:", r.get("model_version"), len(r["items"]), "items, fallback:", r.get("fallback"))'
for c in 1 "$CONNS"; do
  echo "== GET /api/recommendations?limit=20: $c connection(s), ${SECS}s"
  SESSIONS="$DATA/sessions.txt" wrk -t1 -c"$c" -d"${SECS}s" --latency -s scripts/bench/recs.lua "$BASE"
done
grep -E '^(VmHWM|VmRSS)' "/proc/$PID/status"
