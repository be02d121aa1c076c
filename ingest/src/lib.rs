//! shopstream's event sources and producers.
//!
//! # Layout
//! - [`EventSink`]: where the API and the CLI publish the events they cause.
//! - [`log`]: the embedded, durable, partitioned append-only log on the
//!   storage port — the default stream, needing no outside service — and its
//!   consumer.
//! - [`lease`]: shard leases and checkpoints in the store.
//! - [`kinesis`]: the Kinesis consumer (leases, resharding, throttling, KPL
//!   de-aggregation via [`kpl`], positions in [`position`]) and producer.
//! - [`kafka`]: a consumer group member with offsets kept in the store, and
//!   a producer.

pub mod kafka;
pub mod kinesis;
pub mod kpl;
pub mod lease;
pub mod log;
pub mod position;

use async_trait::async_trait;
use domain::Event;
use storage::{Cond, Key, Store, StoreError, Table};

pub use lease::{Held, Lease, Leases};
pub use log::{LogConsumer, StoreLog};

/// Why events could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    #[error("the stream refused the records: {0}")]
    Stream(String),
    /// The dead letter keeps only a prefix of its record (it was over the
    /// event size limit), so there is nothing whole to replay.
    #[error(
        "the dead letter keeps only the first {kept} of the record's {len} bytes: it cannot be replayed"
    )]
    Truncated { kept: usize, len: u64 },
}

/// The record a dead letter holds, if it is whole.
pub(crate) fn replayable(letter: processors::state::DeadLetter) -> Result<Vec<u8>, PublishError> {
    if letter.is_whole() {
        Ok(letter.raw)
    } else {
        Err(PublishError::Truncated {
            kept: letter.raw.len(),
            len: letter.raw_len,
        })
    }
}

/// A stream the service publishes events to. Publishing returns once the
/// records are durably appended.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    /// Appends (partition key, data) records, each key's in the given order.
    async fn publish_raw(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError>;

    /// Where the records go, for messages: `log`, `kinesis:NAME`, `kafka:TOPIC`.
    fn describe(&self) -> String;

    /// Appends events, keyed by their partition key.
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let records = events
            .iter()
            .map(|e| Ok((e.payload.partition_key(), serde_json::to_vec(e)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        self.publish_raw(&records).await
    }

    /// Puts a dead letter's record back on the stream (after a fix made it
    /// valid) and deletes the dead letter. `None` if there is no such dead
    /// letter. On an outside stream the append and the delete are two steps:
    /// a crash between them leaves the dead letter listed, to be replayed
    /// again or deleted.
    async fn replay_dead_letter(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<String>, PublishError> {
        let key = Key::new("dead", id);
        let Some(item) = store.get(Table::DeadLetters, &key).await? else {
            return Ok(None);
        };
        let raw = replayable(storage::from_item(item)?)?;
        let partition_key = replay_key(&raw);
        self.publish_raw(&[(partition_key, raw)]).await?;
        match store
            .delete(Table::DeadLetters, &key, Some(Cond::Exists))
            .await
        {
            Ok(_) | Err(StoreError::ConditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Some(self.describe()))
    }
}

/// The partition key a replayed record goes under: its event's, if it now
/// decodes.
pub(crate) fn replay_key(raw: &[u8]) -> String {
    Event::decode(raw)
        .map(|e| e.payload.partition_key())
        .unwrap_or_else(|_| "replayed".to_owned())
}
