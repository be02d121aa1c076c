//! What a workload's batches cost in store writes and DynamoDB write units
//! under DynamoDB's transaction limits (100 items, 4 MB), counted without
//! DynamoDB: the pipeline runs on the embedded store with every transaction
//! held to those limits, and each transaction's operations are counted and
//! priced as DynamoDB prices transactional writes (2 units per started KB).
//! The emulator (moto) copies its tables on every transaction, so it cannot
//! run a shop-sized batch in reasonable time; the writes depend only on the
//! fold and the parts, which are the same code on both stores.
//!
//! The events are a JSON-lines file such as `scripts/bench/pipeline.sh`
//! generates; they are spread over the partitions by the embedded log's
//! partitioner and applied in batches of `BATCH` records, the partitions
//! concurrently, as the consumer does:
//!
//! ```text
//! cargo run --release -p ingest --example dynamodb_writes -- EVENTS.jsonl [PARTITIONS=4] [BATCH=10000]
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ingest::{Leases, StoreLog};
use processors::{Bus, Pipeline, Record};
use storage::{Store, TxOp, embedded::Embedded, faulty::Faulty};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(file) = args.get(1) else {
        eprintln!("usage: dynamodb_writes EVENTS.jsonl [PARTITIONS=4] [BATCH=10000]");
        std::process::exit(2);
    };
    let partitions: u32 = args.get(2).map_or(4, |a| a.parse().expect("PARTITIONS"));
    let batch: usize = args.get(3).map_or(10_000, |a| a.parse().expect("BATCH"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inner: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").expect("the store"));
    let writes = Arc::new(AtomicU64::new(0));
    let units = Arc::new(AtomicU64::new(0));
    let transactions = Arc::new(AtomicU64::new(0));
    let (w, u, t) = (writes.clone(), units.clone(), transactions.clone());
    let store: Arc<dyn Store> = Arc::new(
        Faulty::new(inner.clone(), move |ops| {
            let n = ops
                .iter()
                .filter(|op| !matches!(op, TxOp::Check { .. }))
                .count();
            w.fetch_add(n as u64, Ordering::Relaxed);
            u.fetch_add(
                storage::expr::transaction_write_units(ops),
                Ordering::Relaxed,
            );
            t.fetch_add(1, Ordering::Relaxed);
            None
        })
        .with_max_ops(storage::port::MAX_TRANSACTION_OPS)
        .with_max_bytes(storage::port::MAX_TRANSACTION_BYTES),
    );
    let log = StoreLog::new(inner, partitions);
    let text = std::fs::read_to_string(file).expect("the events file");
    let mut shards: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
    let mut events = 0u64;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let key = match domain::Event::decode(line.as_bytes()) {
            Ok(e) => e.payload.partition_key(),
            Err(_) => String::new(),
        };
        let records = &mut shards[log.partition_of(&key) as usize];
        records.push(Record {
            position: records.len().to_string(),
            data: line.as_bytes().to_vec(),
        });
        events += 1;
    }
    let pipeline = Pipeline::new(store.clone(), Bus::default());
    let leases = Leases::new(store, "bench", Duration::from_secs(600));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (p, records) in shards.into_iter().enumerate() {
        let (pipeline, leases) = (pipeline.clone(), leases.clone());
        tasks.spawn(async move {
            let shard = p.to_string();
            leases.ensure("bench", &shard, Vec::new()).await.unwrap();
            let lease = leases.get("bench", &shard).await.unwrap().unwrap();
            let mut held = leases.take("bench", &shard, &lease).await.unwrap().unwrap();
            let (mut applied, mut batches) = (0u64, 0u64);
            for chunk in records.chunks(batch) {
                let done = pipeline
                    .apply(&held.checkpoint(), chunk.to_vec())
                    .await
                    .expect("the batch commits");
                held.lease.checkpoint = done.checkpoint;
                applied += done.events + done.duplicates + done.dead_letters;
                batches += 1;
            }
            (applied, batches)
        });
    }
    let (mut applied, mut batches) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (a, b) = r.expect("a partition's task");
        applied += a;
        batches += b;
    }
    assert_eq!(applied, events, "every record was applied or set aside");
    let (w, u, t) = (
        writes.load(Ordering::Relaxed),
        units.load(Ordering::Relaxed),
        transactions.load(Ordering::Relaxed),
    );
    let per = |x: u64| x as f64 * 1000.0 / events as f64;
    println!(
        "{events} events, {partitions} partitions, batches of up to {batch} records ({batches} batches); \
         DynamoDB limits (100 items, 4 MB a transaction): {t} transactions, {w} store writes = {:.0} per \
         1,000 events, {u} write units = {:.0} per 1,000 events ({:.1} s on the embedded store)",
        per(w),
        per(u),
        started.elapsed().as_secs_f64()
    );
}
