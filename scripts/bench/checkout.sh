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
source scripts/bench/serve.sh
./target/release/examples/checkout_load "http://127.0.0.1:$PORT" bench@example.com 'bench password 1' "$PRODUCTS" "$CLIENTS" "$SECS"
echo "server RSS: $(ps -o rss= -p $PID) KiB"
