//! Amazon Kinesis: a KCL-grade consumer and a `PutRecords` producer.
//!
//! # Consumer
//! A coordinator lists the stream's shards (paging through `ListShards`),
//! keeps one lease per shard in the store (with its parents), and takes
//! leases until it holds its fair share of the shards that may be read now —
//! a shard may be read once all its parents are finished, so after a split
//! or merge every key's records are applied parents first. Free and lapsed
//! leases are taken first; a worker below its share then steals one lease a
//! round from the most loaded worker, so instances that join split the
//! stream between them. Each held shard has a reader task that renews the
//! lease, reads with `GetRecords`, de-aggregates KPL records, and commits
//! each batch through the fenced pipeline. Throttling is retried with
//! jittered backoff, an expired iterator is got again from the checkpoint,
//! and `MillisBehindLatest` is exported per shard. On shutdown the readers
//! release their leases (their checkpoints are already committed).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_sdk_kinesis::{
    Client,
    error::ProvideErrorMetadata,
    primitives::Blob,
    types::{PutRecordsRequestEntry, Shard, ShardIteratorType, StreamStatus},
};
use processors::{CommitError, Pipeline, Record};
use rand::Rng;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    EventSink, Held, Lease, Leases, PublishError,
    kpl::{Deaggregated, deaggregate},
    lease::now_ms,
    position::Position,
};

/// Where a shard without a checkpoint is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialPosition {
    /// The oldest record kept.
    #[default]
    TrimHorizon,
    /// Only records written from now on.
    Latest,
}

/// Settings of the Kinesis consumer.
#[derive(Clone, Debug)]
pub struct KinesisSettings {
    pub initial: InitialPosition,
    /// Records per `GetRecords` (at most 10,000).
    pub batch: i32,
    /// Pause after a read that found nothing new.
    pub idle_poll: Duration,
    /// How often the shard list is read again (to see reshards).
    pub shard_sync: Duration,
    /// The least wait after a throttled call; it grows with jitter.
    pub throttle_backoff: Duration,
}

impl Default for KinesisSettings {
    fn default() -> Self {
        Self {
            initial: InitialPosition::TrimHorizon,
            batch: 1000,
            idle_poll: Duration::from_millis(250),
            shard_sync: Duration::from_secs(10),
            throttle_backoff: Duration::from_millis(200),
        }
    }
}

/// A client for the endpoint the AWS environment names
/// (`AWS_ENDPOINT_URL_KINESIS` or `AWS_ENDPOINT_URL`, region, credentials).
pub async fn client_from_env() -> Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Client::new(&config)
}

fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "ThrottlingException"
        )
    )
}

/// Jittered exponential backoff, never below `base`.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1 << attempt.min(5));
    let jitter = rand::rng().random_range(0..=cap.as_millis() as u64);
    base + Duration::from_millis(jitter)
}

fn describe<E: ProvideErrorMetadata + std::fmt::Debug>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => format!("{e:?}"),
    }
}

/// Creates the stream with `shards` shards unless it exists, and waits
/// until it is active.
pub async fn ensure_stream(client: &Client, stream: &str, shards: i32) -> Result<(), String> {
    match client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(format!("cannot create stream {stream}: {}", describe(&e))),
    }
    wait_active(client, stream).await
}

/// Waits until the stream is `ACTIVE` (after a create, split or merge).
pub async fn wait_active(client: &Client, stream: &str) -> Result<(), String> {
    for _ in 0..600 {
        let out = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await;
        if let Ok(out) = out
            && out.stream_description_summary().map(|s| &s.stream_status)
                == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("stream {stream} did not become active in 60 s"))
}

/// Every shard of the stream, through as many `ListShards` pages as it takes.
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    let mut attempt = 0;
    loop {
        // With a page token the stream name must not be given.
        let request = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        match request.send().await {
            Ok(out) => {
                shards.extend(out.shards().iter().cloned());
                match out.next_token() {
                    Some(t) => token = Some(t.to_owned()),
                    None => return Ok(shards),
                }
            }
            Err(e) if is_throttle(e.code()) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(backoff(Duration::from_millis(200), attempt)).await;
            }
            // A page token lapses after 300 s; start again.
            Err(e) if e.code() == Some("ExpiredNextTokenException") && token.is_some() => {
                shards.clear();
                token = None;
            }
            Err(e) => return Err(describe(&e)),
        }
    }
}

/// Reads a stream's shards through the pipeline, sharing them with the other
/// instances that use the same lease table.
#[derive(Clone, Debug)]
pub struct KinesisConsumer {
    pub client: Client,
    pub stream: String,
    pub leases: Leases,
    pub pipeline: Pipeline,
    pub settings: KinesisSettings,
}

impl KinesisConsumer {
    /// Runs until `shutdown` turns true; then the readers release their
    /// leases. Dropping (aborting) this future stops the readers at once,
    /// without releasing — as a crash would.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut readers: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut synced: Option<Instant> = None;
        let tick = (self.leases.failover() / 3).min(self.settings.shard_sync);
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Some(done) = readers.try_join_next() {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a shard reader panicked");
                }
            }
            running.retain(|_, h| !h.is_finished());
            if synced.is_none_or(|t| t.elapsed() >= self.settings.shard_sync) {
                match self.sync_shards().await {
                    Ok(()) => synced = Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, error = %e, "cannot list shards")
                    }
                }
            }
            match self.plan(&running).await {
                Ok(take) => {
                    for (shard, seen) in take {
                        match self.leases.take(&self.stream, &shard, &seen).await {
                            Ok(Some(held)) => {
                                tracing::info!(stream = %self.stream, shard, counter = held.lease.counter, "took lease");
                                let reader = ShardReader::new(self.clone(), held);
                                let handle = readers.spawn(reader.run(shutdown.clone()));
                                running.insert(shard, handle);
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(shard, error = %e, "cannot take lease"),
                        }
                    }
                }
                Err(e) => tracing::warn!(stream = %self.stream, error = %e, "cannot read leases"),
            }
            metrics::gauge!("shopstream_leases_held", "stream" => self.stream.clone())
                .set(running.len() as f64);
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
        }
        while readers.join_next().await.is_some() {}
        metrics::gauge!("shopstream_leases_held", "stream" => self.stream.clone()).set(0.0);
    }

    /// Makes sure every shard has a lease, with its parents.
    async fn sync_shards(&self) -> Result<(), String> {
        let shards = list_shards(&self.client, &self.stream).await?;
        for shard in shards {
            let parents: Vec<String> = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            self.leases
                .ensure(&self.stream, shard.shard_id(), parents)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Which leases to take this round: free ones up to this worker's share
    /// of the readable shards, else one stolen from the busiest worker.
    async fn plan(
        &self,
        running: &HashMap<String, tokio::task::AbortHandle>,
    ) -> Result<Vec<(String, Lease)>, storage::StoreError> {
        let now = now_ms();
        let leases = self.leases.list(&self.stream).await?;
        Ok(plan(self.leases.owner(), &leases, running, now))
    }
}

/// The balancing decision, kept pure for testing. `running`: the shards this
/// worker reads now.
fn plan<V>(
    me: &str,
    leases: &[(String, Lease)],
    running: &HashMap<String, V>,
    now: i64,
) -> Vec<(String, Lease)> {
    let known: HashSet<&str> = leases.iter().map(|(s, _)| s.as_str()).collect();
    let finished: HashSet<&str> = leases
        .iter()
        .filter(|(_, l)| l.finished)
        .map(|(s, _)| s.as_str())
        .collect();
    // Readable: not finished, and every parent finished (or gone from the
    // stream and never leased: trimmed long ago).
    let readable: Vec<&(String, Lease)> = leases
        .iter()
        .filter(|(_, l)| {
            !l.finished
                && l.parents
                    .iter()
                    .all(|p| finished.contains(p.as_str()) || !known.contains(p.as_str()))
        })
        .collect();
    if readable.is_empty() {
        return Vec::new();
    }
    let mut load: HashMap<&str, usize> = HashMap::new();
    for (shard, l) in &readable {
        if let Some(owner) = l.owner.as_deref()
            && owner != me
            && !Leases::is_free(l, now)
            && !running.contains_key(shard)
        {
            *load.entry(owner).or_default() += 1;
        }
    }
    let workers = load.len() + 1;
    let target = readable.len().div_ceil(workers);
    let mine = readable
        .iter()
        .filter(|(s, _)| running.contains_key(s))
        .count();
    if mine >= target {
        return Vec::new();
    }
    let mut need = target - mine;
    let mut take: Vec<(String, Lease)> = Vec::new();
    for (shard, l) in &readable {
        if need == 0 {
            break;
        }
        let stale_mine = l.owner.as_deref() == Some(me);
        if !running.contains_key(shard) && (Leases::is_free(l, now) || stale_mine) {
            take.push((shard.clone(), l.clone()));
            need -= 1;
        }
    }
    if take.is_empty()
        && let Some((&busiest, &n)) = load
            .iter()
            .max_by_key(|(o, n)| (**n, std::cmp::Reverse(**o)))
        && n > target
        && let Some((shard, l)) = readable.iter().find(|(s, l)| {
            l.owner.as_deref() == Some(busiest)
                && !Leases::is_free(l, now)
                && !running.contains_key(s)
        })
    {
        take.push((shard.clone(), l.clone()));
    }
    take
}

/// Reads one shard under its lease. The consumer runs one per held shard;
/// tests drive one step by step.
#[derive(Debug)]
pub struct ShardReader {
    consumer: KinesisConsumer,
    held: Held,
    iterator: Option<String>,
    /// Records read but not yet committed.
    pending: Vec<Record>,
    /// `GetRecords` said the shard is closed and read to its end.
    at_end: bool,
    renewed: Instant,
    attempt: u32,
}

/// What one step of a reader came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on at once.
    More,
    /// Nothing new; wait before reading again.
    Idle,
    /// Wait this long (throttled or failing).
    Wait(Duration),
    /// The lease is gone (taken, or the shard is finished): stop.
    Stop,
}

impl ShardReader {
    pub fn new(consumer: KinesisConsumer, held: Held) -> Self {
        Self {
            consumer,
            held,
            iterator: None,
            pending: Vec::new(),
            at_end: false,
            renewed: Instant::now(),
            attempt: 0,
        }
    }

    fn shard(&self) -> &str {
        &self.held.shard
    }

    /// Records read and not yet committed.
    pub fn pending(&self) -> &[Record] {
        &self.pending
    }

    /// The lease as this reader last saw it.
    pub fn held(&self) -> &Held {
        &self.held
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = match self.step().await {
                Step::More => continue,
                Step::Idle => self.consumer.settings.idle_poll,
                Step::Wait(d) => d,
                Step::Stop => return,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        if let Err(e) = self.consumer.leases.release(&self.held).await {
            tracing::warn!(shard = self.shard(), error = %e, "cannot release lease");
        }
    }

    fn failing(&mut self, what: &str, error: &str) -> Step {
        tracing::warn!(stream = %self.held.stream, shard = self.shard(), error, "{what}");
        self.attempt += 1;
        Step::Wait(backoff(Duration::from_millis(100), self.attempt).min(Duration::from_secs(10)))
    }

    fn throttled(&mut self) -> Step {
        metrics::counter!("shopstream_kinesis_throttled_total", "stream" => self.held.stream.clone())
            .increment(1);
        self.attempt += 1;
        Step::Wait(backoff(
            self.consumer.settings.throttle_backoff,
            self.attempt,
        ))
    }

    /// Renews the lease, commits what is pending, or reads more.
    pub async fn step(&mut self) -> Step {
        let leases = &self.consumer.leases;
        if self.renewed.elapsed() > leases.failover() / 3 {
            match leases.renew(&mut self.held).await {
                Ok(true) => self.renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(stream = %self.held.stream, shard = self.shard(), "lease lost");
                    return Step::Stop;
                }
                Err(e) => return self.failing("cannot renew lease", &e.to_string()),
            }
        }
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            return match self
                .consumer
                .pipeline
                .apply(&self.held.checkpoint(), batch.clone())
                .await
            {
                Ok(applied) => {
                    self.held.lease.checkpoint = applied.checkpoint;
                    self.attempt = 0;
                    Step::More
                }
                Err(CommitError::Fenced { .. }) => {
                    tracing::warn!(stream = %self.held.stream, shard = self.shard(),
                        "batch fenced: the lease moved; nothing applied");
                    Step::Stop
                }
                Err(e) => {
                    self.pending = batch;
                    self.failing("batch failed; retrying", &e.to_string())
                }
            };
        }
        if self.at_end {
            return match leases.finish(&self.held).await {
                Ok(_) => {
                    tracing::info!(stream = %self.held.stream, shard = self.shard(), "shard finished");
                    let _ = leases.release(&self.held).await;
                    Step::Stop
                }
                Err(e) => self.failing("cannot mark the shard finished", &e.to_string()),
            };
        }
        let Some(iterator) = self.iterator.clone() else {
            return match self.get_iterator().await {
                Ok(it) => {
                    self.iterator = Some(it);
                    Step::More
                }
                Err(step) => step,
            };
        };
        let out = self
            .consumer
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(self.consumer.settings.batch)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.code() == Some("ExpiredIteratorException") => {
                // Get a fresh one from the checkpoint.
                self.iterator = None;
                return Step::More;
            }
            Err(e) if is_throttle(e.code()) => return self.throttled(),
            Err(e) => {
                self.iterator = None;
                return self.failing("cannot read records", &describe(&e));
            }
        };
        self.attempt = 0;
        let behind = out.millis_behind_latest().unwrap_or(0);
        metrics::gauge!("shopstream_kinesis_millis_behind_latest",
            "stream" => self.held.stream.clone(), "shard" => self.held.shard.clone())
        .set(behind as f64);
        let done = self
            .held
            .lease
            .checkpoint
            .as_deref()
            .and_then(Position::parse);
        let mut read = 0usize;
        for r in out.records() {
            let seq = r.sequence_number();
            match deaggregate(r.data().as_ref()) {
                Deaggregated::Plain(data) => {
                    let at = Position::whole(seq);
                    if done.as_ref().is_none_or(|d| &at > d) {
                        self.pending.push(Record {
                            position: at.to_string(),
                            data: data.to_vec(),
                        });
                    }
                }
                Deaggregated::Aggregate(users) => {
                    let last = users.len().saturating_sub(1);
                    for (i, data) in users.into_iter().enumerate() {
                        // The last user record stands for the whole record.
                        let at = if i == last {
                            Position::whole(seq)
                        } else {
                            Position::sub(seq, i as u64)
                        };
                        if done.as_ref().is_none_or(|d| &at > d) {
                            self.pending.push(Record {
                                position: at.to_string(),
                                data,
                            });
                        }
                    }
                }
            }
            read += 1;
        }
        metrics::counter!("shopstream_records_read_total", "stream" => self.held.stream.clone(), "source" => "kinesis")
            .increment(self.pending.len() as u64);
        self.iterator = out.next_shard_iterator().map(str::to_owned);
        if self.iterator.is_none() {
            self.at_end = true;
            return Step::More;
        }
        if read == 0 && behind == 0 {
            Step::Idle
        } else {
            Step::More
        }
    }

    async fn get_iterator(&mut self) -> Result<String, Step> {
        let client = &self.consumer.client;
        let mut request = client
            .get_shard_iterator()
            .stream_name(&self.held.stream)
            .shard_id(&self.held.shard);
        request = match self.held.lease.checkpoint.as_deref().map(Position::parse) {
            Some(Some(p)) if p.sub.is_some() => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(p.sequence),
            Some(Some(p)) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(p.sequence),
            Some(None) => {
                let cp = self.held.lease.checkpoint.clone().unwrap_or_default();
                return Err(self.failing("unreadable checkpoint", &cp));
            }
            // Children of a reshard are read from their start, so nothing
            // between the parents' end and the first read is skipped.
            None if !self.held.lease.parents.is_empty()
                || self.consumer.settings.initial == InitialPosition::TrimHorizon =>
            {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            None => request.shard_iterator_type(ShardIteratorType::Latest),
        };
        match request.send().await {
            Ok(out) => match out.shard_iterator() {
                Some(it) => Ok(it.to_owned()),
                None => {
                    self.at_end = true;
                    Err(Step::More)
                }
            },
            Err(e) if is_throttle(e.code()) => Err(self.throttled()),
            Err(e) => Err(self.failing("cannot get a shard iterator", &describe(&e))),
        }
    }
}

/// Publishes events with `PutRecords`: up to 500 records or 5 MiB a call,
/// each with its partition key; records the service refused are sent again
/// (only those) with jittered backoff.
#[derive(Clone, Debug)]
pub struct KinesisSink {
    pub client: Client,
    pub stream: String,
}

const PUT_MAX_RECORDS: usize = 500;
const PUT_MAX_BYTES: usize = 5 * 1024 * 1024;
const PUT_ATTEMPTS: u32 = 10;

impl KinesisSink {
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        Self {
            client,
            stream: stream.into(),
        }
    }

    /// Sends (partition key, data) records. All are durably in the stream
    /// when this returns `Ok`.
    pub async fn put(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && end - start < PUT_MAX_RECORDS
                && (end == start
                    || bytes + records[end].0.len() + records[end].1.len() <= PUT_MAX_BYTES)
            {
                bytes += records[end].0.len() + records[end].1.len();
                end += 1;
            }
            self.put_chunk(&records[start..end]).await?;
            start = end;
        }
        Ok(())
    }

    async fn put_chunk(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let mut left: Vec<usize> = (0..records.len()).collect();
        let mut attempt = 0;
        let mut last_error = String::new();
        while !left.is_empty() {
            if attempt == PUT_ATTEMPTS {
                return Err(PublishError::Stream(format!(
                    "{} of {} records not accepted by {} after {PUT_ATTEMPTS} attempts: {last_error}",
                    left.len(),
                    records.len(),
                    self.stream
                )));
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(Duration::from_millis(100), attempt)).await;
            }
            attempt += 1;
            let entries = left
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&records[i].0)
                        .data(Blob::new(records[i].1.clone()))
                        .build()
                        .map_err(|e| PublishError::Stream(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            match self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) if out.failed_record_count().unwrap_or(0) == 0 => return Ok(()),
                Ok(out) => {
                    let failed: Vec<usize> = out
                        .records()
                        .iter()
                        .zip(&left)
                        .filter(|(r, _)| r.error_code().is_some())
                        .map(|(r, &i)| {
                            last_error = r.error_code().unwrap_or_default().to_owned();
                            i
                        })
                        .collect();
                    metrics::counter!("shopstream_kinesis_put_retried_total", "stream" => self.stream.clone())
                        .increment(failed.len() as u64);
                    left = failed;
                }
                Err(e) => last_error = describe(&e),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventSink for KinesisSink {
    async fn publish_raw(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        self.put(records).await
    }

    fn describe(&self) -> String {
        format!("kinesis:{}", self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: Option<&str>, expires_at: i64, parents: &[&str], finished: bool) -> Lease {
        Lease {
            owner: owner.map(str::to_owned),
            counter: 1,
            expires_at,
            checkpoint: None,
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            finished,
        }
    }

    fn shards(list: &[(&str, Lease)]) -> Vec<(String, Lease)> {
        list.iter()
            .map(|(s, l)| ((*s).to_owned(), l.clone()))
            .collect()
    }

    #[test]
    fn a_lone_worker_takes_every_readable_shard() {
        let leases = shards(&[
            ("0", lease(None, 0, &[], false)),
            ("1", lease(Some("dead"), 5, &[], false)),
            ("2", lease(None, 0, &["0"], false)),
            ("3", lease(None, 0, &[], true)),
        ]);
        let take = plan::<()>("me", &leases, &HashMap::new(), 100);
        let names: Vec<&str> = take.iter().map(|(s, _)| s.as_str()).collect();
        // "2" waits for its parent; "3" is finished.
        assert_eq!(names, vec!["0", "1"]);
    }

    #[test]
    fn children_become_readable_when_all_parents_are_finished() {
        let leases = shards(&[
            ("a", lease(None, 0, &[], true)),
            ("b", lease(Some("x"), 1000, &[], false)),
            ("c", lease(None, 0, &["a", "b"], false)),
            ("d", lease(None, 0, &["a", "gone"], false)),
        ]);
        let take = plan::<()>("me", &leases, &HashMap::new(), 100);
        let names: Vec<&str> = take.iter().map(|(s, _)| s.as_str()).collect();
        // "c" still waits for "b"; "d"'s other parent is no longer in the stream.
        assert_eq!(names, vec!["d"]);
    }

    #[test]
    fn a_new_worker_steals_one_lease_a_round_until_balanced() {
        let live = 10_000;
        let mut leases = shards(&[
            ("0", lease(Some("a"), live, &[], false)),
            ("1", lease(Some("a"), live, &[], false)),
            ("2", lease(Some("a"), live, &[], false)),
            ("3", lease(Some("a"), live, &[], false)),
        ]);
        let mut running: HashMap<String, ()> = HashMap::new();
        for _ in 0..5 {
            for (shard, _) in plan("b", &leases, &running, 100) {
                running.insert(shard.clone(), ());
                let l = leases.iter_mut().find(|(s, _)| *s == shard).unwrap();
                l.1.owner = Some("b".into());
            }
        }
        assert_eq!(running.len(), 2);
        // And "a", now holding its share, takes nothing back.
        let a_running: HashMap<String, ()> = leases
            .iter()
            .filter(|(_, l)| l.owner.as_deref() == Some("a"))
            .map(|(s, _)| (s.clone(), ()))
            .collect();
        assert!(plan("a", &leases, &a_running, 100).is_empty());
    }
}
