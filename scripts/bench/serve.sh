# Sourced by the load benchmarks: starts a release server on a fresh data
# directory and a free loopback port, with the admin bench@example.com, and
# stops it on exit. Sets DATA, PORT and PID. Extra settings: pass them in
# the environment of the sourcing script.
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The load generators play thousands of customers from one loopback address:
# the per-address sign-in limit is off unless the caller sets it.
export SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE=${SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE:-0}
SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LOG=warn SHOPSTREAM_LISTEN="127.0.0.1:$PORT" \
  SHOPSTREAM_SEED_DEMO_CATALOGUE=false SHOPSTREAM_ADMIN_EMAIL=bench@example.com \
  SHOPSTREAM_ADMIN_PASSWORD='bench password 1' \
  ./target/release/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
