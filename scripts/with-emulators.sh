#!/usr/bin/env bash
# Runs a command with the test services on loopback: installs them once
# (cached outside the clone, keyed by version) — moto (DynamoDB), kinesis-mock
# (Kinesis), tansu (Kafka) — starts each on a free port, exports
# SHOPSTREAM_TEST_{DYNAMODB_ENDPOINT,KINESIS_ENDPOINT,KAFKA_BROKERS}, runs the
# command, and stops them. Usage: scripts/with-emulators.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/cache.sh
MOTO_VERSION=5.2.5
MOTO_VENV="$CACHE/moto-$MOTO_VERSION"
TANSU_VERSION=0.6.0
TANSU_ROOT="$CACHE/tansu-$TANSU_VERSION"
KINESIS_MOCK_VERSION=0.6.2
KINESIS_MOCK_DIR="$CACHE/kinesis-local-$KINESIS_MOCK_VERSION/node_modules/kinesis-local"

pip_venv "$MOTO_VENV" "import moto.server" "moto[server]==$MOTO_VERSION"

if [ ! -f "$KINESIS_MOCK_DIR/main.js" ]; then
  echo "test.sh: installing kinesis-local@$KINESIS_MOCK_VERSION (kinesis-mock) from npm"
  command -v npm >/dev/null || { echo "test.sh: npm (Node.js) is needed for the Kinesis emulator" >&2; exit 1; }
  rm -rf "$CACHE/kinesis-local-$KINESIS_MOCK_VERSION"
  mkdir -p "$CACHE/kinesis-local-$KINESIS_MOCK_VERSION"
  npm install --silent --no-save --no-audit --no-fund \
    --prefix "$CACHE/kinesis-local-$KINESIS_MOCK_VERSION" "kinesis-local@$KINESIS_MOCK_VERSION"
fi

if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  echo "test.sh: building tansu $TANSU_VERSION (Kafka-compatible broker) into $TANSU_ROOT; once only, ~20 min on 2 cores"
  rm -rf "$TANSU_ROOT.partial"
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked --quiet \
    --root "$TANSU_ROOT.partial"
  rm -rf "$TANSU_ROOT"
  mv "$TANSU_ROOT.partial" "$TANSU_ROOT"
fi

# libfaketime, for the test of an instance whose clock is ahead (Debian's
# package; the tests preload it into the binary).
have_faketime() {
  for lib in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -e "$lib" ] && return 0
  done
  return 1
}
if ! have_faketime; then
  echo "test.sh: installing Debian's faketime"
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq faketime >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq faketime; }) >/dev/null
  else
    sudo apt-get install -y -qq faketime >/dev/null
  fi
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # name port pid log
  for _ in $(seq 1 150); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $2), 0.5)" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$3" 2>/dev/null; then
      echo "test.sh: $1 exited before it listened; its log:" >&2
      cat "$4" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "test.sh: $1 did not listen on port $2 in 30 s; its log:" >&2
  cat "$4" >&2
  return 1
}

LOGS=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

MOTO_PORT=$(free_port)
"$MOTO_VENV/bin/python" scripts/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
PIDS+=($!)
wait_port "moto (DynamoDB emulator)" "$MOTO_PORT" "${PIDS[-1]}" "$LOGS/moto.log"
echo "test.sh: DynamoDB emulator (moto $MOTO_VERSION) on 127.0.0.1:$MOTO_PORT"

KINESIS_PORT=$(free_port)
KINESIS_TLS_PORT=$(free_port)
# kinesis-mock reads its TLS certificate from its own folder: start it there.
(cd "$KINESIS_MOCK_DIR" && KINESIS_MOCK_PLAIN_PORT=$KINESIS_PORT KINESIS_MOCK_TLS_PORT=$KINESIS_TLS_PORT \
  LOG_LEVEL=WARN SHARD_LIMIT=1000 CREATE_STREAM_DURATION=50ms SPLIT_SHARD_DURATION=200ms \
  MERGE_SHARDS_DURATION=200ms exec node main.js) >"$LOGS/kinesis.log" 2>&1 &
PIDS+=($!)
wait_port "kinesis-mock (Kinesis emulator)" "$KINESIS_PORT" "${PIDS[-1]}" "$LOGS/kinesis.log"
echo "test.sh: Kinesis emulator (kinesis-local $KINESIS_MOCK_VERSION) on 127.0.0.1:$KINESIS_PORT"

KAFKA_PORT=$(free_port)
"$TANSU_ROOT/bin/tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ \
  >"$LOGS/tansu.log" 2>&1 &
PIDS+=($!)
wait_port "tansu (Kafka broker)" "$KAFKA_PORT" "${PIDS[-1]}" "$LOGS/tansu.log"
echo "test.sh: Kafka broker (tansu $TANSU_VERSION) on 127.0.0.1:$KAFKA_PORT"

export SHOPSTREAM_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export SHOPSTREAM_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export SHOPSTREAM_TEST_KINESIS_ENDPOINT="http://127.0.0.1:$KINESIS_PORT"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

"$@"
