#!/usr/bin/env bash
# End-to-end pipeline throughput: N generated events are put on the stream
# with `shopstream produce` (server stopped), then a release server is
# started and timed until its pipeline has applied them all (decode + fold +
# commit with checkpoint, as in production).
# Usage: scripts/bench/pipeline.sh [events] [partitions|shards] [mode]
#   mode embedded (default): the embedded log and store.
#   mode kinesis-dynamodb: a Kinesis stream in kinesis-mock, state in moto's
#     DynamoDB; run it as `scripts/with-emulators.sh scripts/bench/pipeline.sh N 4 kinesis-dynamodb`.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50000}
PARTS=${2:-4}
MODE=${3:-embedded}
cargo build --release --quiet
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
PID=0
python3 - "$N" > "$DATA/events.jsonl" <<'PY'
import json, sys, uuid, random
random.seed(7)
n = int(sys.argv[1])
products = [str(uuid.uuid4()) for _ in range(200)]
for i in range(n):
    p = random.choice(products)
    k = i % 10
    if k < 4:
        t, d = "browse.viewed", {"session_id": f"s{i % 500}", "product_id": p}
    elif k < 6:
        t, d = "stock.adjusted", {"product_id": p, "delta": 3, "reason": "received"}
    elif k < 8:
        t, d = "basket.added", {"user_id": f"u{i % 300}", "product_id": p, "quantity": 1}
    else:
        t, d = "purchase.completed", {"order_id": f"o{i}", "user_id": f"u{i % 300}",
            "lines": [{"product_id": p, "quantity": 1, "unit_price": "9.99"}], "total": "9.99", "currency": "EUR"}
    print(json.dumps({"id": str(uuid.uuid4()), "type": t, "occurred_at": "2026-11-24T10:00:00Z",
                      "source": "bench", "data": d}))
PY
export SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LOG=warn SHOPSTREAM_LOG_PARTITIONS=$PARTS SHOPSTREAM_SEED_DEMO_CATALOGUE=false
if [ "$MODE" = kinesis-dynamodb ]; then
  : "${SHOPSTREAM_TEST_KINESIS_ENDPOINT:?run under scripts/with-emulators.sh}"
  : "${SHOPSTREAM_TEST_DYNAMODB_ENDPOINT:?run under scripts/with-emulators.sh}"
  SUFFIX=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')
  export SHOPSTREAM_BACKEND=aws SHOPSTREAM_STREAM=kinesis SHOPSTREAM_KINESIS_STREAM="bench-$SUFFIX" \
    SHOPSTREAM_KINESIS_SHARDS=$PARTS SHOPSTREAM_TABLE_PREFIX="bench${SUFFIX}_" \
    SHOPSTREAM_JWT_SECRET=bench-secret-that-is-long-enough-0123456789 \
    AWS_ENDPOINT_URL="$SHOPSTREAM_TEST_DYNAMODB_ENDPOINT" AWS_ENDPOINT_URL_KINESIS="$SHOPSTREAM_TEST_KINESIS_ENDPOINT" \
    AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
  ./target/release/shopstream init >/dev/null
elif [ "$MODE" != embedded ]; then
  echo "unknown mode $MODE (embedded or kinesis-dynamodb)" >&2; exit 2
fi
start=$(date +%s.%N)
./target/release/shopstream produce --file "$DATA/events.jsonl" --batch 5000 >/dev/null
echo "produce ($MODE): $N events appended in $(python3 -c "import time; print(round(time.time() - $start, 2))") s"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s.%N)
SHOPSTREAM_LISTEN="127.0.0.1:$PORT" ./target/release/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
while true; do
  applied=$(curl -s "http://127.0.0.1:$PORT/metrics" 2>/dev/null | awk '/^shopstream_events_applied_total/ {s += $2} END {print s + 0}' || true)
  [ "$applied" -ge "$N" ] && break
  sleep 0.05
done
secs=$(python3 -c "import time; print(time.time() - $start)")
echo "pipeline: $N events applied in $(printf %.2f "$secs") s = $(python3 -c "print(round($N / $secs))") events/s ($MODE, $PARTS partitions, start-up included)"
curl -s "http://127.0.0.1:$PORT/metrics" > "$DATA/metrics.txt"
grep -E '^shopstream_(pipeline_commit_seconds|pipeline_batch_records|store_commit_writes)_(sum|count)' "$DATA/metrics.txt"
awk -v n="$N" '/^shopstream_pipeline_store_writes_total/ {w += $2} /^shopstream_events_duplicate_total/ {d += $2}
  END {printf "pipeline store writes: %d, %.0f per 1,000 events (checkpoints included); duplicates dropped: %d\n", w, w * 1000 / n, d}' "$DATA/metrics.txt"
