#!/usr/bin/env bash
# Runs schemathesis (PyPI; installed once into the cache, keyed by version)
# against a real server on loopback: every operation of the served OpenAPI,
# with every check, stateful links included — once as the admin and once
# anonymously. Usage: scripts/schemathesis.sh [extra st run options]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cache.sh
ST_VERSION=4.32.5
ST_VENV="$CACHE/schemathesis-$ST_VERSION"
pip_venv "$ST_VENV" "import schemathesis" "schemathesis==$ST_VERSION"
cargo build --quiet --locked --bin shopstream
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LISTEN="127.0.0.1:$PORT" SHOPSTREAM_LOG=error \
SHOPSTREAM_ADMIN_EMAIL=st@example.com SHOPSTREAM_ADMIN_PASSWORD='schemathesis password 1' \
SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE=0 SHOPSTREAM_LIMIT_AUTH_PER_ACCOUNT_PER_MINUTE=0 \
  ./target/debug/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do
  kill -0 $PID 2>/dev/null || { echo "schemathesis.sh: the server exited:" >&2; tail -20 "$DATA/err.log" >&2; exit 1; }
  sleep 0.2
done
BASE="http://127.0.0.1:$PORT"
TOKEN=$(curl -sf "$BASE/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"st@example.com","password":"schemathesis password 1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
status=0
echo "== schemathesis as the admin"
"$ST_VENV/bin/st" --config-file scripts/schemathesis.toml run "$BASE/api/openapi.json" --url "$BASE" --checks all \
  -H "Authorization: Bearer $TOKEN" --max-examples "${ST_EXAMPLES:-25}" --seed 1 "$@" || status=1
echo "== schemathesis anonymously"
"$ST_VENV/bin/st" --config-file scripts/schemathesis.toml run "$BASE/api/openapi.json" --url "$BASE" --checks all \
  --max-examples "${ST_EXAMPLES:-25}" --seed 2 "$@" || status=1
exit $status
