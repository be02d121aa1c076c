#!/usr/bin/env bash
# Load test of the product API on the embedded backend, on loopback, with wrk
# (Debian package `wrk`). Starts a release build on a fresh data directory,
# runs a bounded GET and POST load, prints wrk's report, stops the server.
# Usage: scripts/bench/load.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS=${1:-32}
SECS=${2:-15}
command -v wrk >/dev/null || { echo "load.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LISTEN="127.0.0.1:$PORT" SHOPSTREAM_LOG=warn \
SHOPSTREAM_ADMIN_EMAIL=bench@example.com SHOPSTREAM_ADMIN_PASSWORD='bench password 123' \
  ./target/release/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do grep -q listening "$DATA/out.log" 2>/dev/null && break; sleep 0.1; done
BASE="http://127.0.0.1:$PORT"
TOKEN=$(curl -sf "$BASE/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench password 123"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
ID=$(curl -sf "$BASE/api/products?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
echo "== GET /api/products/{id}: $CONNS connections, ${SECS}s"
wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$BASE/api/products/$ID"
echo "== POST /api/products: $CONNS connections, ${SECS}s"
TOKEN=$TOKEN wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s scripts/bench/post_product.lua "$BASE"
echo "== server metrics: store commits"
curl -s "$BASE/metrics" | grep -E '^shopstream_store_commit_(seconds|writes)_(sum|count)'
