#!/usr/bin/env bash
# Search at shop scale: N generated products (a shop's vocabulary: 40
# categories of goods, materials, colours, uses, brands; descriptions drawn
# from the same words) imported into a fresh embedded store, then the
# server started on it (the index is built from the catalogue; the time is
# printed), then with wrk on loopback:
#   1. GET /api/search one request at a time, rotating through word, typo,
#      prefix, multi-word and filtered queries (p50/p99);
#   2. GET /api/categories at 32 connections (req/s).
# It also prints the first hit of the queries the issue names.
# SEARCH_PATH=/api/products runs the queries as `q=` on the old listing
# (for the figures before the search engine; filters it lacks are left out).
# Usage: scripts/bench/search.sh [products] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
SECS=${2:-15}
SEARCH_PATH=${SEARCH_PATH:-/api/search}
command -v wrk >/dev/null || { echo "search.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
DATA=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
python3 - "$N" > "$DATA/catalogue.jsonl" <<'PY'
import json, random, sys
random.seed(17)
n = int(sys.argv[1])
goods = {
    "socks": ["socks", "ankle socks", "crew socks"], "knitwear": ["sweater", "cardigan", "jumper"],
    "hats": ["beanie", "cap", "bucket hat"], "gloves": ["gloves", "mittens"], "shoes": ["boots", "trainers", "sandals"],
    "outerwear": ["jacket", "parka", "raincoat", "gilet"], "shirts": ["tee", "shirt", "polo"],
    "trousers": ["chinos", "joggers", "shorts"], "bags": ["backpack", "tote", "duffel"], "home": ["blanket", "cushion", "throw"],
    "kitchen": ["mug", "kettle", "pan", "knife"], "lighting": ["lamp", "lantern", "bulb"], "garden": ["trowel", "planter", "hose"],
    "camping": ["tent", "sleeping bag", "stove"], "cycling": ["helmet", "bottle", "saddle"], "toys": ["puzzle", "kite", "blocks"],
    "books": ["notebook", "journal", "atlas"], "beauty": ["soap", "balm", "lotion"], "office": ["pen", "desk tray", "stapler"],
    "pets": ["lead", "collar", "pet bed"],
}
materials = ["merino", "wool", "cotton", "linen", "bamboo", "alpaca", "cashmere", "fleece", "leather", "canvas",
             "oak", "walnut", "steel", "enamel", "ceramic", "glass", "silicone", "recycled", "organic", "hemp"]
uses = ["hiking", "running", "trail", "travel", "winter", "summer", "everyday", "camping", "cycling", "work",
        "outdoor", "indoor", "kids", "classic", "lightweight", "waterproof", "thermal", "insulated", "compact", "heavy duty"]
colours = ["red", "navy", "grey", "black", "white", "olive", "mustard", "rust", "teal", "cream"]
brands = ["Northwind", "Fjell", "Ashby", "Kestrel", "Marlow", "Tideline", "Copperleaf", "Highgate", "Wren", "Oakum"]
cats = list(goods)
for i in range(n):
    cat = random.choice(cats)
    thing = random.choice(goods[cat])
    words = random.sample(materials, random.choice([1, 1, 2])) + random.sample(uses, random.choice([0, 1, 1, 2]))
    random.shuffle(words)
    name = f"{random.choice(brands)} {' '.join(words)} {thing}".strip()
    desc = " ".join(random.sample(materials + uses + colours, 8))
    print(json.dumps({"sku": f"SKU-{i:07d}", "name": name, "description": f"{name.lower()}: {desc}",
        "price": f"{random.randint(100, 20000) / 100:.2f}", "currency": "EUR", "category": cat,
        "supplier_id": f"sup-{i % 50}", "attributes": {"colour": random.choice(colours)},
        "low_stock_threshold": random.randint(0, 10)}))
print(json.dumps({"sku": "SOCK-MERINO-HIKE", "name": "Merino wool hiking socks", "description": "cushioned merino socks for long walks",
    "price": "18.90", "currency": "EUR", "category": "socks", "supplier_id": "sup-1", "attributes": {"colour": "grey"}}))
PY
export SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LOG=warn SHOPSTREAM_SEED_DEMO_CATALOGUE=false
./target/release/shopstream import --format products "$DATA/catalogue.jsonl" | tail -1
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s.%N)
SHOPSTREAM_LISTEN="127.0.0.1:$PORT" ./target/release/shopstream serve >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
BASE="http://127.0.0.1:$PORT"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE$SEARCH_PATH?q=socks")" = 200 ]; do
  kill -0 $PID 2>/dev/null || { cat "$DATA/err.log"; exit 1; }
  sleep 0.1
done
echo "search: answering over $((N + 1)) products $(python3 -c "import time; print(round(time.time() - $start, 2))") s after start"
# The import is announced on the log: wait for the pipeline to have applied
# it (the index rereads each product it names) before measuring.
until [ "$(curl -s "$BASE/metrics" | awk '/^shopstream_events_applied_total.*product[.]upserted/ {s += $2} END {print s + 0}')" -ge "$((N + 1))" ]; do
  kill -0 $PID 2>/dev/null || { cat "$DATA/err.log"; exit 1; }
  sleep 0.5
done
sleep 1
echo "== first hits"
for q in "merino%20socks" "merinno%20socks" "hiking%20socks%20wool"; do
  printf '%-24s ' "$q"
  curl -s "$BASE$SEARCH_PATH?q=$q&limit=1" | python3 -c 'import json,sys; b = json.load(sys.stdin); i = b["items"]; print((i[0].get("product", i[0])["name"] if i else "(nothing)"), "| total", b.get("total", "?"))'
done
QUERIES=("q=merino%20socks" "q=merinno%20socks" "q=hiking%20socks%20wool" "q=waterproof%20jacket" "q=kettle"
  "q=northwind%20alpaca" "q=cashmer" "q=trail%20run" "q=lamp&max_price=50" "q=socks&in_stock=true&category=socks"
  "q=mug&supplier_id=sup-3" "category=camping")
if [ "$SEARCH_PATH" != /api/search ]; then
  QUERIES=("q=merino%20socks" "q=merinno%20socks" "q=hiking%20socks%20wool" "q=waterproof%20jacket" "q=kettle"
    "q=northwind%20alpaca" "q=cashmer" "q=trail%20run" "category=camping")
fi
PATHS=()
for q in "${QUERIES[@]}"; do PATHS+=("$SEARCH_PATH?$q"); done
LUA="$DATA/rotate.lua"
cat > "$LUA" <<'LUA'
local paths, i = {}, 0
init = function(args) for k, a in ipairs(args) do paths[k] = a end end
request = function() i = i % #paths + 1; return wrk.format("GET", paths[i]) end
LUA
echo "== GET $SEARCH_PATH, one connection, ${SECS}s, ${#QUERIES[@]} queries in turn"
wrk -t1 -c1 -d"${SECS}s" --latency -s "$LUA" "$BASE" -- "${PATHS[@]}"
echo "== GET /api/categories: 32 connections, ${SECS}s"
wrk -t2 -c32 -d"${SECS}s" --latency "$BASE/api/categories"
