//! One shard's reader: renews the lease, reads with `GetRecords`,
//! de-aggregates KPL records, commits each batch through the fenced
//! pipeline, and backs off on throttling.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::{error::ProvideErrorMetadata, types::ShardIteratorType};
use processors::{CommitError, Record};
use tokio::sync::watch;

use super::KinesisConsumer;
use super::{InitialPosition, backoff, describe, is_throttle};
use crate::{
    Held,
    kpl::{Deaggregated, deaggregate},
    position::Position,
};

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
    /// When the last `GetRecords` call was made.
    last_read: Option<Instant>,
    /// Where a half-committed batch of this shard ends: records are read
    /// on until they reach it before the next commit.
    until: Option<Position>,
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
            last_read: None,
            until: None,
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

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
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
    #[tracing::instrument(name = "kinesis.read", skip_all, fields(shard = %self.held.shard), level = "debug")]
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
        let reached = match (&self.until, self.pending.last()) {
            (None, _) => true,
            (Some(until), Some(last)) => {
                Position::parse(&last.position).is_some_and(|p| &p >= until)
            }
            (Some(_), None) => false,
        };
        if !self.pending.is_empty() && (reached || self.at_end) {
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
                    self.until = None;
                    Step::More
                }
                Err(CommitError::Incomplete { until, .. }) => {
                    tracing::info!(stream = %self.held.stream, shard = self.shard(), %until,
                        "reading on to the end of a half-committed batch");
                    self.pending = batch;
                    self.until = Position::parse(&until);
                    if self.until.is_none() {
                        return self.failing("unreadable end of a half-committed batch", &until);
                    }
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
        // At most 5 reads per second per shard, whatever they find.
        let gap = self.consumer.settings.min_read_interval;
        if let Some(wait) = self
            .last_read
            .map(|t| gap.saturating_sub(t.elapsed()))
            .filter(|w| !w.is_zero())
        {
            return Step::Wait(wait);
        }
        self.last_read = Some(Instant::now());
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
            // The shard is gone (past the stream's retention): there is
            // nothing left to read in it, so it is finished and its
            // children may start.
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                tracing::warn!(stream = %self.held.stream, shard = self.shard(), error = %describe(&e),
                    "the shard no longer exists; counting it as finished");
                self.at_end = true;
                Err(Step::More)
            }
            Err(e) => Err(self.failing("cannot get a shard iterator", &describe(&e))),
        }
    }
}
