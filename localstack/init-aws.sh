#!/bin/bash
# LocalStack ready hook (mounted at /etc/localstack/init/ready.d/): creates
# the Kinesis stream and the DynamoDB tables shopstream uses, with the names
# `shopstream init` gives them (table prefix "shopstream_"). Safe to run again.
set -euo pipefail

PREFIX="${SHOPSTREAM_TABLE_PREFIX:-shopstream_}"
STREAM="${SHOPSTREAM_KINESIS_STREAM:-shopstream-events}"
SHARDS="${SHOPSTREAM_KINESIS_SHARDS:-4}"

awslocal kinesis create-stream --stream-name "$STREAM" --shard-count "$SHARDS" 2>/dev/null \
  || echo "stream $STREAM exists"
awslocal kinesis wait stream-exists --stream-name "$STREAM"

for table in users products meta log leases inventory analytics behaviour dead_letters alerts baskets orders outbox; do
  awslocal dynamodb create-table --table-name "${PREFIX}${table}" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    >/dev/null 2>&1 || echo "table ${PREFIX}${table} exists"
done
for table in meta baskets; do
  awslocal dynamodb update-time-to-live --table-name "${PREFIX}${table}" \
    --time-to-live-specification Enabled=true,AttributeName=ttl >/dev/null 2>&1 || true
done
echo "shopstream: stream $STREAM ($SHARDS shards) and tables ${PREFIX}* ready"
