//! shopstream's event sources and producers.
//!
//! # Layout
//! - [`EventSink`]: where the API and the CLI publish the events they cause.
//! - [`log`]: the embedded, durable, partitioned append-only log on the
//!   storage port — the default stream, needing no outside service — and its
//!   consumer.
//! - [`lease`]: shard leases and checkpoints in the store.

pub mod lease;
pub mod log;

use async_trait::async_trait;
use domain::Event;

pub use lease::{Held, Lease, Leases};
pub use log::{LogConsumer, StoreLog};

/// Why events could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] storage::StoreError),
}

/// A stream the service publishes events to. `publish` returns once the
/// events are durably appended.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError>;
}
