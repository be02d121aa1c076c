#!/usr/bin/env bash
# Checkout throughput and latency on the embedded backend: a release server
# on loopback, CLIENTS customers each adding one unit and checking out in a
# loop (approving test card) for SECS seconds, over PRODUCTS hot products.
# Usage: scripts/bench/checkout.sh [products] [clients] [secs]
set -euo pipefail
cd "$(dirname "$0")/../.."
PRODUCTS=${1:-1}
CLIENTS=${2:-32}
SECS=${3:-15}
cargo build --release --quiet
cargo build --release --quiet --example checkout_load
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LOG=warn SHOPSTREAM_LISTEN="127.0.0.1:$PORT" \
  SHOPSTREAM_SEED_DEMO_CATALOGUE=false SHOPSTREAM_ADMIN_EMAIL=bench@example.com \
  SHOPSTREAM_ADMIN_PASSWORD='bench password 1' ./target/release/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
./target/release/examples/checkout_load "http://127.0.0.1:$PORT" bench@example.com 'bench password 1' "$PRODUCTS" "$CLIENTS" "$SECS"
echo "server RSS: $(ps -o rss= -p $PID) KiB"
