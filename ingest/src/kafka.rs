//! Kafka (`rdkafka`): a consumer group member and a producer.
//!
//! The group coordinator decides which member reads a partition; the store
//! decides what counts. When a partition is assigned, the member takes that
//! partition's lease in the store (its counter grows), which fences any batch
//! the previous owner still holds: that batch's transaction is refused. Each
//! batch's effects and its offset are committed in one store transaction;
//! the Kafka offset commit that follows is only a hint of where to start
//! fetching, always at or before the stored checkpoint, and records at or
//! below the checkpoint are skipped. So a rebalance, a crash or a zombie
//! neither loses nor double-applies a batch.
//!
//! The hint is [`REWIND`] records before the checkpoint, and the producer
//! writes record batches of at most that many records: a fetch then always
//! starts at or before the start of the batch holding the next record. Some
//! brokers (tansu 0.6, which the tests use) answer a fetch from an offset
//! inside a record batch with the batches after it, which would silently
//! lose the rest of that batch; the few records read again are skipped.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use processors::{CommitError, Pipeline, Record};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use tokio::sync::watch;

use crate::{EventSink, Held, Leases, PublishError};

/// How far before the next record fetching restarts; also the most records
/// the producer puts in one record batch.
pub const REWIND: i64 = 500;

/// Where fetching resumes for a partition whose last applied offset is `done`.
fn resume_at(done: i64) -> i64 {
    (done + 1 - REWIND).max(0)
}

/// Settings shared by the Kafka consumer, producer and admin client.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Records per batch, at most.
    pub batch: usize,
    /// How long a batch waits to fill before it is committed.
    pub linger: Duration,
    /// `session.timeout.ms`: how soon the group notices a dead member.
    pub session_timeout: Duration,
}

impl KafkaSettings {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "shopstream");
        c
    }
}

/// Why a Kafka client could not be made or the topic not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused `what` (a client, a subscription, a topic).
    #[error("cannot {what}: {source}")]
    Client {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot create topic {topic}: {code}")]
    Topic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

impl KafkaSetupError {
    fn client(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |source| Self::Client { what, source }
    }
}

/// Creates the topic with `partitions` partitions unless it exists.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<_> = settings
        .client()
        .create()
        .map_err(KafkaSetupError::client("create a Kafka admin client"))?;
    let topic = NewTopic::new(&settings.topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(KafkaSetupError::client(format!(
            "create topic {}",
            settings.topic
        )))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::Topic { topic, code }),
        }
    }
    Ok(())
}

/// What the group did to this member, seen from librdkafka's callbacks.
#[derive(Debug)]
enum GroupChange {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

#[derive(Default)]
struct Context {
    changes: Mutex<Vec<GroupChange>>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && let Ok(mut c) = self.changes.lock()
        {
            c.push(GroupChange::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && let Ok(mut c) = self.changes.lock()
        {
            c.push(GroupChange::Assigned(partitions(tpl)));
        }
    }
}

/// A member of the consumer group, applying its partitions' records through
/// the pipeline.
#[derive(Clone, Debug)]
pub struct KafkaConsumer {
    pub settings: KafkaSettings,
    pub leases: Leases,
    pub pipeline: Pipeline,
}

/// One assigned partition: its lease and the records read but not committed.
struct Partition {
    held: Held,
    pending: Vec<Record>,
    /// When the lease was last taken or renewed.
    renewed: Instant,
    /// After a failed batch: not before then, and how long the next wait is.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Paused at the broker because `pending` is full; records fetched
    /// meanwhile were dropped, so fetching is rewound on resume.
    paused: bool,
    /// Where a half-committed batch ends: nothing is applied until the
    /// records read reach it.
    until: Option<i64>,
}

/// How many records a partition holds back at most while its batches fail
/// (a multiple of the batch size): then that partition alone pauses.
const MAX_PENDING_BATCHES: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Partition {
    fn done(&self) -> i64 {
        self.held
            .lease
            .checkpoint
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1)
    }
}

impl KafkaConsumer {
    /// Runs until `shutdown` turns true, then leaves the group. Dropping
    /// (aborting) this future leaves without a goodbye, as a crash would.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), KafkaSetupError> {
        let s = &self.settings;
        let consumer: StreamConsumer<Context> = s
            .client()
            .set("group.id", &s.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                s.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (s.session_timeout.as_millis() / 4).max(100).to_string(),
            )
            .set("partition.assignment.strategy", "range")
            .create_with_context(Context::default())
            .map_err(KafkaSetupError::client("create the Kafka consumer"))?;
        consumer
            .subscribe(&[&s.topic])
            .map_err(KafkaSetupError::client(format!("subscribe to {}", s.topic)))?;
        let mut owned: BTreeMap<i32, Partition> = BTreeMap::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Fill a batch, or wait out the linger.
            let deadline = Instant::now() + s.linger;
            let mut read = 0;
            while read < s.batch {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let message = tokio::select! {
                    m = tokio::time::timeout(left, consumer.recv()) => m,
                    _ = shutdown.changed() => break,
                };
                self.follow_group(&consumer, &mut owned).await;
                let message = match message {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        break;
                    }
                    Ok(Ok(m)) => m,
                };
                let p = message.partition();
                let Some(part) = owned.get_mut(&p) else {
                    // Assigned, but its lease could not be taken yet: take it
                    // and read again from its checkpoint.
                    if let Some(part) = self.take(p).await {
                        rewind(&consumer, &s.topic, p, part.done());
                        owned.insert(p, part);
                    }
                    continue;
                };
                if message.offset() <= part.done()
                    || part.pending.last().is_some_and(|r| {
                        r.position.parse::<i64>().unwrap_or(-1) >= message.offset()
                    })
                {
                    continue;
                }
                if part.paused || part.pending.len() >= s.batch * MAX_PENDING_BATCHES {
                    // This partition's batches keep failing: hold no more of
                    // it (fetched records are read again on resume).
                    if !part.paused {
                        tracing::warn!(topic = %s.topic, partition = p, pending = part.pending.len(),
                            "partition paused: its batches keep failing");
                        pause(&consumer, &s.topic, p, true);
                        part.paused = true;
                    }
                    continue;
                }
                let expected = part.pending.last().map_or(part.done() + 1, |r| {
                    r.position.parse::<i64>().unwrap_or(-1) + 1
                });
                if message.offset() != expected {
                    // Legitimate after compaction or transaction markers.
                    tracing::debug!(topic = %s.topic, partition = p, expected, got = message.offset(), "offset gap");
                    metrics::counter!("shopstream_kafka_offset_gaps_total", "stream" => s.topic.clone())
                        .increment(1);
                }
                part.pending.push(Record {
                    position: message.offset().to_string(),
                    data: message.payload().unwrap_or_default().to_vec(),
                });
                read += 1;
            }
            metrics::counter!("shopstream_records_read_total", "stream" => s.topic.clone(), "source" => "kafka")
                .increment(read as u64);
            self.follow_group(&consumer, &mut owned).await;
            let mut lost = Vec::new();
            for (&p, part) in owned.iter_mut() {
                // The group decides who owns a partition; the lease is the
                // fence, kept current so that the lease table tells the truth.
                if part.renewed.elapsed() > self.leases.failover() / 3 {
                    match self.leases.renew(&mut part.held).await {
                        Ok(true) => part.renewed = Instant::now(),
                        Ok(false) => {
                            lost.push(p);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(topic = %s.topic, partition = p, error = %e, "cannot renew lease")
                        }
                    }
                }
                let short = part.until.is_some_and(|u| {
                    part.pending
                        .last()
                        .is_none_or(|r| r.position.parse::<i64>().unwrap_or(-1) < u)
                });
                if part.pending.is_empty()
                    || short
                    || part.retry_at.is_some_and(|t| t > Instant::now())
                {
                    continue;
                }
                let batch = std::mem::take(&mut part.pending);
                match self
                    .pipeline
                    .apply(&part.held.checkpoint(), batch.clone())
                    .await
                {
                    Ok(applied) => {
                        part.held.lease.checkpoint = applied.checkpoint;
                        // The hint for where fetching starts after a restart.
                        let _ = consumer.store_offset(&s.topic, p, resume_at(part.done()));
                        part.retry_at = None;
                        part.backoff = FIRST_BACKOFF;
                        part.until = None;
                        if part.paused {
                            // Read on from what was applied.
                            rewind(&consumer, &s.topic, p, part.done());
                            pause(&consumer, &s.topic, p, false);
                            part.paused = false;
                            tracing::info!(topic = %s.topic, partition = p, "partition resumed");
                        }
                    }
                    Err(CommitError::Incomplete { until, .. }) => {
                        tracing::info!(topic = %s.topic, partition = p, %until,
                            "reading on to the end of a half-committed batch");
                        part.pending = batch;
                        part.until = until.parse().ok();
                    }
                    Err(CommitError::Fenced { .. }) => {
                        tracing::warn!(topic = %s.topic, partition = p,
                            "batch fenced: the partition's lease moved; nothing applied");
                        lost.push(p);
                    }
                    Err(e) => {
                        tracing::warn!(topic = %s.topic, partition = p, error = %e,
                            backoff_ms = part.backoff.as_millis() as u64, "batch failed; retrying");
                        part.pending = batch;
                        // Only this partition waits; the others go on.
                        part.retry_at = Some(Instant::now() + jittered(part.backoff));
                        part.backoff = (part.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            for p in lost {
                owned.remove(&p);
                // Still assigned to us by the group? Take the lease again and
                // read on from what the store says was applied.
                if let Ok(assignment) = consumer.assignment()
                    && assignment
                        .elements_for_topic(&s.topic)
                        .iter()
                        .any(|e| e.partition() == p)
                    && let Some(part) = self.take(p).await
                {
                    rewind(&consumer, &s.topic, p, part.done());
                    pause(&consumer, &s.topic, p, false);
                    owned.insert(p, part);
                }
            }
            metrics::gauge!("shopstream_kafka_partitions_paused", "stream" => s.topic.clone())
                .set(owned.values().filter(|p| p.paused).count() as f64);
            metrics::gauge!("shopstream_leases_held", "stream" => s.topic.clone())
                .set(owned.len() as f64);
        }
        // Leave the group; commit the hints we have.
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        consumer.unsubscribe();
        for part in owned.values() {
            let _ = self.leases.release(&part.held).await;
        }
        metrics::gauge!("shopstream_leases_held", "stream" => s.topic.clone()).set(0.0);
        Ok(())
    }

    /// Applies the group's assignments and revocations: a revoked partition's
    /// uncommitted records are dropped; an assigned one's lease is taken.
    /// Fetching starts at the committed hint, at or before the checkpoint.
    async fn follow_group(
        &self,
        consumer: &StreamConsumer<Context>,
        owned: &mut BTreeMap<i32, Partition>,
    ) {
        let changes: Vec<GroupChange> = match consumer.context().changes.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        for change in changes {
            match change {
                GroupChange::Revoked(ps) => {
                    tracing::info!(topic = %self.settings.topic, partitions = ?ps, "partitions revoked");
                    for p in ps {
                        owned.remove(&p);
                    }
                }
                GroupChange::Assigned(ps) => {
                    tracing::info!(topic = %self.settings.topic, partitions = ?ps, "partitions assigned");
                    for p in ps {
                        if let Some(part) = self.take(p).await {
                            // Start from what our store says was applied,
                            // not from Kafka's committed offset (a hint).
                            rewind(consumer, &self.settings.topic, p, part.done());
                            owned.insert(p, part);
                        }
                    }
                }
            }
        }
    }

    /// Takes a partition's lease whoever holds it: the group gave it to us.
    async fn take(&self, p: i32) -> Option<Partition> {
        let (topic, shard) = (self.settings.topic.as_str(), p.to_string());
        for attempt in 0..20u64 {
            let r = async {
                self.leases.ensure(topic, &shard, Vec::new()).await?;
                match self.leases.get(topic, &shard).await? {
                    Some(seen) => self.leases.take(topic, &shard, &seen).await,
                    None => Ok(None),
                }
            }
            .await;
            match r {
                Ok(Some(held)) => {
                    return Some(Partition {
                        held,
                        pending: Vec::new(),
                        renewed: Instant::now(),
                        retry_at: None,
                        backoff: FIRST_BACKOFF,
                        paused: false,
                        until: None,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(topic, partition = p, error = %e, "cannot take lease"),
            }
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        None
    }
}

/// Pauses or resumes fetching one partition.
fn pause(consumer: &StreamConsumer<Context>, topic: &str, p: i32, paused: bool) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, p);
    let r = if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        tracing::warn!(topic, partition = p, paused, error = %e, "cannot pause or resume the partition");
    }
}

/// `d` less up to a quarter, so partitions that failed together do not
/// retry in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 - rand::random::<f64>() / 4.0)
}

/// Moves fetching back to just before the partition's checkpoint, waiting for
/// the seek to take effect (a lost seek would let fetching run on past
/// records that were dropped).
fn rewind(consumer: &StreamConsumer<Context>, topic: &str, p: i32, done: i64) {
    let seek = || {
        consumer.seek(
            topic,
            p,
            Offset::Offset(resume_at(done)),
            Duration::from_secs(10),
        )
    };
    let r = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(seek)
        }
        _ => seek(),
    };
    if let Err(e) = r {
        tracing::warn!(topic, partition = p, error = %e, "cannot seek back to the checkpoint");
    }
}

/// Publishes to a Kafka topic, keyed by partition key (librdkafka's
/// `murmur2_random` partitioner, as Java clients do), and returns once every
/// record is acknowledged by all in-sync replicas.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish()
    }
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaSetupError> {
        let producer = settings
            .client()
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("batch.num.messages", REWIND.to_string())
            .set("message.timeout.ms", "30000")
            // The broker drops the producer's own retries (a send resent
            // after a lost acknowledgement), and keeps each key's order;
            // re-sends from outside (a client's retry) are dropped by the
            // pipeline's once-per-event-id window.
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .create()
            .map_err(KafkaSetupError::client("create the Kafka producer"))?;
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
        })
    }
}

#[async_trait]
impl EventSink for KafkaSink {
    #[tracing::instrument(name = "stream.publish", skip_all, fields(records = records.len()), err(level = "debug"))]
    async fn publish_raw(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, data) in records {
            let record = FutureRecord::to(&self.topic).key(key).payload(data);
            let mut record = record;
            // Enqueue; wait for room when the local queue is full.
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(PublishError::Stream(e.to_string())),
                }
            }
        }
        let mut failed: HashMap<String, usize> = HashMap::new();
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => *failed.entry(e.to_string()).or_default() += 1,
                Err(_) => *failed.entry("delivery cancelled".into()).or_default() += 1,
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PublishError::Stream(format!(
                "{} of {} records not delivered to {}: {failed:?}",
                failed.values().sum::<usize>(),
                records.len(),
                self.topic
            )))
        }
    }

    fn describe(&self) -> String {
        format!("kafka:{}", self.topic)
    }
}
