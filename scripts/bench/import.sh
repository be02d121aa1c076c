#!/usr/bin/env bash
# Catalogue import: N generated products (JSON lines by default, or CSV) put
# into a fresh embedded store with `shopstream import --format products`,
# timed end to end (parse, store, announce on the log).
# Usage: scripts/bench/import.sh [products] [jsonl|csv]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
KIND=${2:-jsonl}
cargo build --release --quiet
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
python3 - "$N" "$KIND" > "$DATA/catalogue.$KIND" <<'PY'
import csv, json, random, sys
random.seed(11)
n, kind = int(sys.argv[1]), sys.argv[2]
words = ["merino", "wool", "hiking", "socks", "cotton", "linen", "desk", "lamp", "oak", "steel",
         "trail", "running", "shoes", "rain", "jacket", "winter", "hat", "scarf", "travel", "mug"]
cats = [f"cat-{i}" for i in range(200)]
out = csv.writer(sys.stdout, lineterminator="\n")
cols = ["sku", "name", "description", "price", "currency", "category", "supplier_id", "low_stock_threshold"]
if kind == "csv":
    out.writerow(cols + ["attributes.colour"])
for i in range(n):
    name = " ".join(random.sample(words, 4)).capitalize()
    row = {"sku": f"SKU-{i:07d}", "name": name, "description": f"{name}, made to last",
           "price": f"{random.randint(100, 20000) / 100:.2f}", "currency": "EUR",
           "category": random.choice(cats), "supplier_id": f"sup-{i % 50}",
           "low_stock_threshold": random.randint(0, 10), "colour": random.choice(["red", "blue", "grey"])}
    if kind == "csv":
        out.writerow([row[k] for k in cols] + [row["colour"]])
    else:
        row["attributes"] = {"colour": row.pop("colour")}
        print(json.dumps(row))
PY
export SHOPSTREAM_DATA_DIR="$DATA" SHOPSTREAM_LOG=warn SHOPSTREAM_SEED_DEMO_CATALOGUE=false
start=$(date +%s.%N)
./target/release/shopstream import --format products "$DATA/catalogue.$KIND" | tail -1
secs=$(python3 -c "import time; print(time.time() - $start)")
echo "import: $N products ($KIND) in $(printf %.2f "$secs") s = $(python3 -c "print(round($N / $secs))") products/s (embedded, release)"
