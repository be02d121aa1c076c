#!/usr/bin/env python3
"""Data for scripts/bench/recs.sh: creates ITEMS products through the API
(100 per category) and writes the events of a synthetic shop to a JSON-lines
file: one stock.adjusted per product, then INTERACTIONS browse.viewed by
50,000 anonymous sessions — Zipf-like popularity, each session browsing runs
of neighbouring items within a category (the shape of
recommender/examples/scale.rs). The session ids go to SESSIONS, one per line.

Usage: recs_data.py BASE TOKEN ITEMS INTERACTIONS EVENTS_FILE SESSIONS_FILE
"""
import concurrent.futures
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

base, token = sys.argv[1], sys.argv[2]
items, interactions = int(sys.argv[3]), int(sys.argv[4])
events_file, sessions_file = sys.argv[5], sys.argv[6]
url = urllib.parse.urlparse(base)
local = threading.local()


def create(i):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection(url.hostname, url.port)
    body = json.dumps({
        "sku": f"RB-{i}",
        "name": f"Bench item {i}",
        "price": f"{1 + i % 97}.99",
        "currency": "EUR",
        "category": f"cat-{i // 100}",
        "supplier_id": "bench",
        "low_stock_threshold": 0,
    })
    for attempt in range(5):
        try:
            local.conn.request("POST", "/api/products", body, {
                "content-type": "application/json",
                "authorization": f"Bearer {token}",
            })
            r = local.conn.getresponse()
            data = r.read()
            if r.status != 201:
                raise SystemExit(f"POST /api/products answered {r.status}: {data[:300]!r}")
            return i, json.loads(data)["id"]
        except (ConnectionError, http.client.HTTPException):
            local.conn = http.client.HTTPConnection(url.hostname, url.port)
            time.sleep(0.1 * (attempt + 1))
    raise SystemExit("POST /api/products kept failing")


started = time.time()
ids = [None] * items
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    for n, (i, pid) in enumerate(pool.map(create, range(items)), 1):
        ids[i] = pid
        if n % 10000 == 0:
            print(f"  {n} products ({n / (time.time() - started):.0f}/s)", file=sys.stderr)
print(f"created {items} products in {time.time() - started:.1f} s", file=sys.stderr)

rng = random.Random(42)
sessions = [str(uuid.UUID(int=(0x4000 << 64) | (0x8000 << 48) | s)) for s in range(50_000)]
now = datetime.now(timezone.utc)
t0 = now - timedelta(hours=20)
step = timedelta(hours=19) / max(interactions, 1)


def envelope(kind, at, data):
    return json.dumps({
        "id": str(uuid.uuid4()), "type": kind, "version": 1, "source": "bench",
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "data": data,
    })


with open(events_file, "w") as out:
    for pid in ids:
        out.write(envelope("stock.adjusted", t0, {"product_id": pid, "delta": 1000, "reason": "received"}) + "\n")
    n = 0
    while n < interactions:
        session = sessions[rng.randrange(len(sessions))]
        start = min(int(items ** rng.random()), items - 1)
        cat = start // 100 * 100
        for k in range(1 + rng.randrange(8)):
            if n >= interactions:
                break
            item = min(cat + (start + k * (1 + rng.randrange(3))) % 100, items - 1)
            n += 1
            out.write(envelope("browse.viewed", t0 + step * n,
                               {"session_id": session, "product_id": ids[item]}) + "\n")
with open(sessions_file, "w") as out:
    out.write("\n".join(sessions) + "\n")
print(f"wrote {items + interactions} events", file=sys.stderr)
