#!/usr/bin/env bash
# Websocket fan-out on the embedded backend: CLIENTS clients subscribed to
# `stock`, RATE stock changes/s posted for SECS seconds over PRODUCTS products.
# Usage: scripts/bench/ws.sh [clients] [rate] [secs] [products]
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENTS=${1:-1000}
RATE=${2:-1000}
SECS=${3:-10}
PRODUCTS=${4:-1000}
cargo build --release --quiet
cargo build --release --quiet --example ws_fanout
export SHOPSTREAM_CONSUMER_BATCH=200
# All clients come from one loopback address.
export SHOPSTREAM_LIMIT_WS_ANONYMOUS_PER_ADDRESS=${SHOPSTREAM_LIMIT_WS_ANONYMOUS_PER_ADDRESS:-0}
source scripts/bench/serve.sh
before=$(ps -o rss= -p $PID)
cpu() { ps -o times= -p "$1"; }
server_cpu=$(cpu $PID)
./target/release/examples/ws_fanout "http://127.0.0.1:$PORT" bench@example.com 'bench password 1' "$CLIENTS" "$RATE" "$SECS" "$PRODUCTS" &
LOAD=$!
sleep 4
during=$(ps -o rss= -p $PID)
wait $LOAD
echo "server CPU during the run: $(( $(cpu $PID) - server_cpu )) s (the load generator's is in its line above; both share the same cores)"
echo "server RSS: $before KiB idle, $during KiB with $CLIENTS clients connected = $(( (during - before) / CLIENTS )) KiB per connection (upper bound: includes the stream's state)"
grep -E "^shopstream_ws_slow_disconnects_total" <(curl -s "http://127.0.0.1:$PORT/metrics") || echo "slow disconnects: 0"
