//! The embedded event log: partitioned, durable, append-only, readable from
//! any offset — the default stream, needing no outside service. Records are
//! the events' JSON, as on every other stream.
//!
//! An append moves the partition's head and writes the records in one
//! transaction conditional on the head it read, so offsets have no gaps and a
//! reader never sees offset `n + 1` before `n`.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use processors::{CommitError, Pipeline, Record as PipelineRecord};
use storage::{Cond, Key, Query, SortRange, Store, StoreError, Table, TxOp, Update, Value};
use tokio::sync::{Mutex, Notify, watch};

use crate::{
    EventSink, PublishError,
    lease::{Held, Leases},
};

/// The number of partitions a new log has.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// The stream name of the embedded log in leases and dead letters.
pub const STREAM: &str = "log";

/// One record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    /// Appends to a partition from this process go one at a time, so they
    /// never conflict with each other.
    locks: Vec<Mutex<()>>,
    appended: Notify,
}

#[derive(Clone, Debug)]
pub struct StoreLog {
    store: Arc<dyn Store>,
    partitions: u32,
    shared: Arc<Shared>,
}

fn partition_pk(p: u32) -> String {
    format!("log#{p}")
}

fn offset_sk(offset: u64) -> String {
    format!("{offset:020}")
}

fn head_key(p: u32) -> Key {
    Key::new(partition_pk(p), "head")
}

impl StoreLog {
    pub fn new(store: Arc<dyn Store>, partitions: u32) -> Self {
        let partitions = partitions.max(1);
        Self {
            store,
            partitions,
            shared: Arc::new(Shared {
                locks: (0..partitions).map(|_| Mutex::new(())).collect(),
                appended: Notify::new(),
            }),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition a key's records go to: stable across runs and versions.
    pub fn partition_of(&self, key: &str) -> u32 {
        // FNV-1a: fixed, unlike std's randomly seeded hasher.
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        key.hash(&mut h);
        (h.finish() % u64::from(self.partitions)) as u32
    }

    /// The next offset of a partition (its number of records).
    pub async fn head(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(
            match self.store.get(Table::Log, &head_key(partition)).await? {
                Some(item) => match item.get("next") {
                    Some(Value::N(n)) => n
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("log head {n}")))?,
                    _ => 0,
                },
                None => 0,
            },
        )
    }

    /// Appends records (key, data), each partition's in the given order, and
    /// returns each record's partition and offset.
    pub async fn append(
        &self,
        records: &[(String, Vec<u8>)],
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        self.append_with(records, Vec::new()).await
    }

    /// Appends like [`StoreLog::append`], and applies `extra` operations in
    /// the same transaction as the records (all of which must then go to one
    /// partition and fit one transaction): either both happen or neither.
    pub async fn append_with(
        &self,
        records: &[(String, Vec<u8>)],
        extra: Vec<TxOp>,
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, (key, _)) in records.iter().enumerate() {
            by_partition
                .entry(self.partition_of(key))
                .or_default()
                .push(i);
        }
        let chunk = self
            .store
            .max_transaction_ops()
            .saturating_sub(1 + extra.len())
            .max(1);
        if !extra.is_empty() && (by_partition.len() > 1 || records.len() > chunk) {
            return Err(StoreError::Invalid(
                "extra operations need records of one partition that fit one transaction".into(),
            ));
        }
        let mut placed = vec![(0, 0); records.len()];
        for (partition, indexes) in by_partition {
            let _guard = self.shared.locks[partition as usize].lock().await;
            for part in indexes.chunks(chunk) {
                let mut attempt = 0;
                loop {
                    let head = self.head(partition).await?;
                    let cond = if head == 0 {
                        Cond::HasNot("next".into())
                    } else {
                        Cond::eq("next", head)
                    };
                    let mut ops = vec![TxOp::Update {
                        table: Table::Log,
                        key: head_key(partition),
                        updates: vec![Update::set("next", head + part.len() as u64)],
                        cond: Some(cond),
                    }];
                    for (j, &i) in part.iter().enumerate() {
                        let mut item =
                            Key::new(partition_pk(partition), offset_sk(head + j as u64)).to_item();
                        item.insert("key".into(), Value::S(records[i].0.clone()));
                        item.insert("data".into(), Value::B(records[i].1.clone()));
                        ops.push(TxOp::Put {
                            table: Table::Log,
                            item,
                            cond: None,
                        });
                    }
                    let appended = ops.len();
                    ops.extend(extra.iter().cloned());
                    match self.store.transact(ops).await {
                        Ok(()) => {
                            for (j, &i) in part.iter().enumerate() {
                                placed[i] = (partition, head + j as u64);
                            }
                            break;
                        }
                        Err(StoreError::TransactionCanceled { failed })
                            if failed.iter().any(|&i| i >= appended) =>
                        {
                            // An extra operation's condition failed: nothing was appended.
                            return Err(StoreError::ConditionFailed);
                        }
                        // Another process appended first: read the head again.
                        Err(StoreError::TransactionCanceled { .. } | StoreError::Conflict(_))
                            if attempt < 50 =>
                        {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(attempt)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.shared.appended.notify_waiters();
        Ok(placed)
    }

    /// Puts a dead letter's record back on the log (for after a fix made it
    /// valid) and deletes the dead letter, in one transaction.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<Option<(u32, u64)>, PublishError> {
        let key = Key::new("dead", id);
        let Some(item) = self.store.get(Table::DeadLetters, &key).await? else {
            return Ok(None);
        };
        let raw = crate::replayable(storage::from_item(item)?)?;
        let partition_key = crate::replay_key(&raw);
        let delete = TxOp::Delete {
            table: Table::DeadLetters,
            key,
            cond: Some(Cond::Exists),
        };
        match self
            .append_with(&[(partition_key, raw)], vec![delete])
            .await
        {
            Ok(placed) => Ok(placed.first().copied()),
            // Replayed by someone else meanwhile.
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` records of a partition from offset `from` on, in order
    /// and without gaps.
    #[tracing::instrument(name = "log.read", skip(self), level = "debug")]
    pub async fn read(
        &self,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(storage::MAX_PAGE));
        let mut cursor = None;
        // One store page holds at most `MAX_PAGE` items: page on until
        // `limit`, the end of the partition, or a gap.
        while out.len() < limit {
            let query = Query {
                range: SortRange::Between(offset_sk(from), offset_sk(u64::MAX >> 1)),
                limit: limit - out.len(),
                cursor: cursor.take(),
                ..Query::default()
            };
            let page = self
                .store
                .query(Table::Log, &partition_pk(partition), &query)
                .await?;
            let full = page.items.len();
            for mut item in page.items {
                let offset: u64 = match item.get(storage::SK) {
                    Some(Value::S(sk)) => sk
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("log offset {sk}")))?,
                    _ => return Err(StoreError::Corrupt("a log record without offset".into())),
                };
                if offset != from + out.len() as u64 {
                    return Ok(out);
                }
                // Moved out of the item, not copied.
                match (item.remove("key"), item.remove("data")) {
                    (Some(Value::S(key)), Some(Value::B(data))) => {
                        out.push(Record {
                            partition,
                            offset,
                            key,
                            data,
                        });
                    }
                    _ => {
                        return Err(StoreError::Corrupt(format!(
                            "log record {partition}/{offset}"
                        )));
                    }
                }
            }
            match page.cursor {
                Some(next) if full > 0 => cursor = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl EventSink for StoreLog {
    #[tracing::instrument(name = "stream.publish", skip_all, fields(records = records.len()), err(level = "debug"))]
    async fn publish_raw(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        self.append(records).await?;
        Ok(())
    }

    fn describe(&self) -> String {
        "log".into()
    }

    /// One transaction: the append and the delete happen together or not at all.
    async fn replay_dead_letter(
        &self,
        _store: &dyn Store,
        id: &str,
    ) -> Result<Option<String>, PublishError> {
        Ok(StoreLog::replay_dead_letter(self, id)
            .await?
            .map(|(p, o)| format!("log partition {p} offset {o}")))
    }
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Settings of the log consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Records per batch.
    pub batch: usize,
    /// How long to wait for new records before looking again.
    pub idle_poll: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch: 1000,
            idle_poll: Duration::from_millis(250),
        }
    }
}

/// Reads every partition of the log through the pipeline, one task per
/// partition, each under that partition's lease.
#[derive(Clone, Debug)]
pub struct LogConsumer {
    pub log: StoreLog,
    pub leases: Leases,
    pub pipeline: Pipeline,
    pub settings: ConsumerSettings,
}

impl LogConsumer {
    /// Runs until `shutdown` turns true; then releases the leases. Dropping
    /// (aborting) this future ends every partition's task with it, with no
    /// release, as a crash would.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..self.log.partitions() {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { this.run_partition(p, shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn acquire(&self, shard: &str) -> Result<Option<Held>, StoreError> {
        self.leases.ensure(STREAM, shard, Vec::new()).await?;
        let Some(lease) = self.leases.get(STREAM, shard).await? else {
            return Ok(None);
        };
        let mine = lease.owner.as_deref() == Some(self.leases.owner());
        if mine || self.leases.lapsed(STREAM, shard, &lease) {
            self.leases.take(STREAM, shard, &lease).await
        } else {
            Ok(None)
        }
    }

    async fn run_partition(&self, partition: u32, mut shutdown: watch::Receiver<bool>) {
        let shard = partition.to_string();
        let mut held: Option<Held> = None;
        let mut renewed = Instant::now();
        let mut backoff = Duration::from_millis(100);
        // Where a half-committed batch ends: the next read reaches it.
        let mut until: Option<u64> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let Some(h) = held.as_mut() else {
                match self.acquire(&shard).await {
                    Ok(Some(h)) => {
                        tracing::info!(
                            stream = STREAM,
                            shard,
                            counter = h.lease.counter,
                            "took lease"
                        );
                        held = Some(h);
                        renewed = Instant::now();
                    }
                    // Within a second of a release by a stopping instance.
                    Ok(None) => {
                        let scan = (self.leases.failover() / 4).min(Duration::from_secs(1));
                        wait(&mut shutdown, scan).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, shard, "cannot take lease");
                        wait(&mut shutdown, backoff).await;
                    }
                }
                continue;
            };
            if renewed.elapsed() > self.leases.failover() / 3 {
                match self.leases.renew(h).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(stream = STREAM, shard, "lease lost");
                        held = None;
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, shard, "cannot renew lease"),
                }
            }
            let from = h
                .lease
                .checkpoint
                .as_deref()
                .and_then(|c| c.parse::<u64>().ok())
                .map_or(0, |c| c + 1);
            let appended = self.log.shared.appended.notified();
            let want = until.map_or(self.settings.batch, |u| {
                self.settings
                    .batch
                    .max((u + 1).saturating_sub(from) as usize)
            });
            let records = match self.log.read(partition, from, want).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, shard, "cannot read the log");
                    wait(&mut shutdown, backoff).await;
                    continue;
                }
            };
            if let Ok(head) = self.log.head(partition).await {
                metrics::gauge!("shopstream_partition_lag_records", "stream" => STREAM, "shard" => shard.clone())
                    .set(head.saturating_sub(from + records.len() as u64) as f64);
            }
            if records.is_empty() {
                tokio::select! {
                    () = appended => {}
                    () = tokio::time::sleep(self.settings.idle_poll) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let batch = records
                .into_iter()
                .map(|r| PipelineRecord {
                    position: r.offset.to_string(),
                    data: r.data,
                })
                .collect();
            match self.pipeline.apply(&h.checkpoint(), batch).await {
                Ok(applied) => {
                    h.lease.checkpoint = applied.checkpoint;
                    backoff = Duration::from_millis(100);
                    until = None;
                }
                Err(CommitError::Incomplete { until: end, .. }) => {
                    tracing::info!(stream = STREAM, shard, until = %end, "reading on to the end of a half-committed batch");
                    until = end.parse().ok();
                    if until.is_none() {
                        wait(&mut shutdown, backoff).await;
                    }
                }
                Err(CommitError::Fenced { .. }) => {
                    tracing::warn!(
                        stream = STREAM,
                        shard,
                        "batch fenced: the lease moved; nothing applied"
                    );
                    held = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, shard, "batch failed; retrying");
                    wait(&mut shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Some(h) = held
            && let Err(e) = self.leases.release(&h).await
        {
            tracing::warn!(error = %e, shard, "cannot release lease");
        }
    }
}

async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use domain::{Event, EventPayload, ProductId};
    use storage::embedded::Embedded;

    use super::*;

    #[tokio::test]
    async fn appended_events_read_back_in_order_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").unwrap());
        let log = StoreLog::new(store, DEFAULT_PARTITIONS);
        let product = ProductId::new();
        let events: Vec<Event> = (0..5)
            .map(|_| {
                Event::new(
                    "test",
                    EventPayload::ProductDeleted {
                        product_id: product,
                    },
                )
            })
            .collect();
        log.publish(&events).await.unwrap();
        log.publish(&events[..2]).await.unwrap();
        let p = log.partition_of(&product.to_string());
        let records = log.read(p, 0, 100).await.unwrap();
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6]
        );
        let decoded: Vec<Event> = records
            .iter()
            .map(|r| serde_json::from_slice(&r.data).unwrap())
            .collect();
        assert_eq!(decoded[..5], events[..]);
        assert_eq!(log.read(p, 3, 100).await.unwrap().len(), 4);
        assert_eq!(log.head(p).await.unwrap(), 7);
        for other in (0..DEFAULT_PARTITIONS).filter(|q| *q != p) {
            assert!(log.read(other, 0, 10).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_read_pages_past_one_store_page() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").unwrap());
        let log = StoreLog::new(store, 1);
        let total = storage::MAX_PAGE * 2 + 500;
        for chunk in 0..(total / 500) {
            let records: Vec<_> = (0..500)
                .map(|i| ("k".to_string(), format!("{chunk}-{i}").into_bytes()))
                .collect();
            log.append(&records).await.unwrap();
        }
        let all = log.read(0, 0, 10_000).await.unwrap();
        assert_eq!(all.len(), total);
        assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
        let middle = log.read(0, 700, 1_600).await.unwrap();
        assert_eq!(middle.len(), 1_600);
        assert_eq!(middle.first().unwrap().offset, 700);
        assert_eq!(middle.last().unwrap().offset, 2_299);
    }

    #[tokio::test]
    async fn concurrent_appends_leave_no_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").unwrap());
        // Two logs on one store stand in for two processes: their locks are separate.
        let a = StoreLog::new(store.clone(), 1);
        let b = StoreLog::new(store, 1);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let log = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    for j in 0..25 {
                        log.append(&[(format!("k{i}"), format!("{i}-{j}").into_bytes())])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let all = a.read(0, 0, 1000).await.unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(a.head(0).await.unwrap(), 200);
    }
}
