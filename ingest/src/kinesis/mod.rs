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
//!
//! # Layout
//! - [`admin`]: creating the stream and listing its shards.
//! - [`coordinator`]: the lease coordinator ([`KinesisConsumer`]).
//! - [`reader`]: one shard's reader ([`ShardReader`]).
//! - [`sink`]: the producer ([`KinesisSink`]).

mod admin;
mod coordinator;
mod reader;
mod sink;

pub use admin::{ensure_stream, list_shards, wait_active};
pub use coordinator::KinesisConsumer;
pub use reader::{ShardReader, Step};
pub use sink::KinesisSink;

use std::time::Duration;

use aws_sdk_kinesis::{Client, error::ProvideErrorMetadata};
use rand::Rng;

/// Why a call about the stream itself failed.
#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    /// The Kinesis API refused or failed the call (its code and message).
    #[error("{operation}: {detail}")]
    Api {
        operation: &'static str,
        detail: String,
    },
    #[error("stream {0} did not become active in 60 s")]
    NotActive(String),
    /// The lease store failed while leases were being made.
    #[error(transparent)]
    Store(#[from] storage::StoreError),
}

impl KinesisError {
    fn api<E: ProvideErrorMetadata + std::fmt::Debug>(operation: &'static str, e: &E) -> Self {
        Self::Api {
            operation,
            detail: describe(e),
        }
    }
}

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
    /// The least time between two `GetRecords` calls on a shard, also when
    /// records keep arriving: Kinesis allows 5 per second per shard, shared
    /// by every consumer of the stream.
    pub min_read_interval: Duration,
}

impl Default for KinesisSettings {
    fn default() -> Self {
        Self {
            initial: InitialPosition::TrimHorizon,
            batch: 1000,
            idle_poll: Duration::from_millis(250),
            shard_sync: Duration::from_secs(10),
            throttle_backoff: Duration::from_millis(200),
            min_read_interval: Duration::from_millis(200),
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
