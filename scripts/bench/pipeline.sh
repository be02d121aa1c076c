#!/usr/bin/env bash
# End-to-end pipeline throughput: N generated events are put on the stream
# with `shopstream produce` (server stopped), then a release server is
# started and timed until its pipeline has applied them all (decode + fold +
# commit with checkpoint, as in production).
# Usage: scripts/bench/pipeline.sh [events] [partitions|shards] [mode] [shape]
#   mode embedded (default): the embedded log and store.
#   mode kinesis-dynamodb: a Kinesis stream in kinesis-mock, state in moto's
#     DynamoDB; run it as `scripts/with-emulators.sh scripts/bench/pipeline.sh N 4 kinesis-dynamodb`.
#   shape shop (default): 10,000 Zipf-skewed products, 20,000 sessions, 5,000
#     users, an hour of events; shape small: the first wave's 200 products,
#     500 sessions and 300 users, all in one minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200000}
PARTS=${2:-4}
MODE=${3:-embedded}
SHAPE=${4:-shop}
cargo build --release --quiet
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
PID=0
python3 - "$N" "$SHAPE" > "$DATA/events.jsonl" <<'PY'
import bisect, datetime, itertools, json, random, sys, uuid
random.seed(7)
n, shape = int(sys.argv[1]), sys.argv[2]
ev = lambda t, at, d: json.dumps({"id": str(uuid.UUID(int=random.getrandbits(128), version=4)), "type": t,
    "occurred_at": at, "source": "bench", "data": d})
if shape == "small":
    # The first wave's shape: few keys, every event in one minute.
    products = [str(uuid.UUID(int=random.getrandbits(128), version=4)) for _ in range(200)]
    for i in range(n):
        p, k, at = random.choice(products), i % 10, "2026-11-24T10:00:00Z"
        if k < 4:
            print(ev("browse.viewed", at, {"session_id": f"s{i % 500}", "product_id": p}))
        elif k < 6:
            print(ev("stock.adjusted", at, {"product_id": p, "delta": 3, "reason": "received"}))
        elif k < 8:
            print(ev("basket.added", at, {"user_id": f"u{i % 300}", "product_id": p, "quantity": 1}))
        else:
            print(ev("purchase.completed", at, {"order_id": f"o{i}", "user_id": f"u{i % 300}",
                "lines": [{"product_id": p, "quantity": 1, "unit_price": "9.99"}], "total": "9.99", "currency": "EUR"}))
    sys.exit()
# A shop: 10,000 products with Zipf-skewed popularity (s = 1), 20,000
# anonymous sessions and 5,000 signed-in users; 60 % views, 15 % basket adds,
# 15 % stock adjustments, 10 % purchases (1 to 3 lines), spread over the hour
# before now, in time order.
products = [str(uuid.UUID(int=random.getrandbits(128), version=4)) for _ in range(10_000)]
cum = list(itertools.accumulate(1 / r for r in range(1, len(products) + 1)))
pick = lambda: products[min(bisect.bisect(cum, random.random() * cum[-1]), len(products) - 1)]
def actor():
    if random.random() < 0.3:
        return {"user_id": f"u{random.randrange(5_000)}"}
    return {"session_id": f"s{random.randrange(20_000)}"}
start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
for i in range(n):
    at = (start + datetime.timedelta(seconds=3600 * i / n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    r = random.random()
    if r < 0.60:
        print(ev("browse.viewed", at, {**actor(), "product_id": pick()}))
    elif r < 0.75:
        print(ev("basket.added", at, {**actor(), "product_id": pick(), "quantity": random.randint(1, 3)}))
    elif r < 0.90:
        delta = random.choice([-2, -1, 5, 20])
        print(ev("stock.adjusted", at, {"product_id": pick(), "delta": delta,
            "reason": "received" if delta > 0 else "damaged"}))
    else:
        lines = [{"product_id": pick(), "quantity": 1, "unit_price": "9.99"} for _ in range(random.randint(1, 3))]
        total = f"{9.99 * len(lines):.2f}"
        print(ev("purchase.completed", at, {"order_id": f"o{i}", "user_id": f"u{random.randrange(5_000)}",
            "lines": lines, "total": total, "currency": "EUR"}))
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
echo "pipeline: $N events applied in $(printf %.2f "$secs") s = $(python3 -c "print(round($N / $secs))") events/s ($MODE, $SHAPE shape, $PARTS partitions, start-up included)"
# The server's CPU time (user + system) until then: less sensitive than the
# wall time to what else runs, though not to the machine's speed.
cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$PID/stat")
echo "server CPU: $cpu s, $(python3 -c "print(round($cpu * 1e6 / $N, 1))") µs per event"
curl -s "http://127.0.0.1:$PORT/metrics" > "$DATA/metrics.txt"
grep -E '^shopstream_(pipeline_commit_seconds|pipeline_batch_records|store_commit_writes|store_commit_seconds)_(sum|count)' "$DATA/metrics.txt"
awk -v n="$N" '/^shopstream_pipeline_store_writes_total/ {w += $2} /^shopstream_pipeline_write_units_total/ {u += $2}
  /^shopstream_events_duplicate_total/ {d += $2}
  END {printf "pipeline store writes: %d, %.0f per 1,000 events (checkpoints included); DynamoDB write units (2 per started KB of each transactional write): %.0f per 1,000 events; duplicates dropped: %d\n", w, w * 1000 / n, u * 1000 / n, d}' "$DATA/metrics.txt"
