#!/usr/bin/env bash
# Load test of what the web pages call, on the embedded backend, on loopback,
# with wrk: the storefront page, a script (fresh and revalidated), the
# category list and a name search that has to read the most products a
# search reads (1,000). A release server (scripts/bench/serve.sh) with
# PRODUCTS products in 20 categories.
# Usage: scripts/bench/web.sh [products] [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
PRODUCTS=${1:-5000}
CONNS=${2:-16}
SECS=${3:-10}
command -v wrk >/dev/null || { echo "web.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin shopstream
. scripts/bench/serve.sh
BASE="http://127.0.0.1:$PORT"
python3 - "$BASE" "$PRODUCTS" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
base, n = sys.argv[1], int(sys.argv[2])
def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("content-type", "application/json")
    if token: req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as r: return json.load(r)
token = call("POST", "/api/auth/login", {"email": "bench@example.com", "password": "bench password 1"})["access_token"]
def make(i):
    call("POST", "/api/products", {"sku": f"B-{i}", "name": f"Bench product {i}", "price": "9.99",
        "currency": "EUR", "category": f"cat-{i % 20}"}, token)
with ThreadPoolExecutor(8) as ex: list(ex.map(make, range(n)))
print(f"created {n} products")
PY
ETAG=$(curl -sI "$BASE/assets/shop.js" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
for path in "/" "/assets/shop.js" "/api/categories" "/api/products?q=no-such-name&limit=20"; do
  echo "== GET $path: $CONNS connections, ${SECS}s"
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$BASE$path" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx"
done
echo "== GET /assets/shop.js with If-None-Match (304): $CONNS connections, ${SECS}s"
wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "If-None-Match: $ETAG" "$BASE/assets/shop.js" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx"
