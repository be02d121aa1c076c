//! What an event does to shopstream's state, and the pipeline that commits a
//! batch's effects together with its checkpoint.
//!
//! # Layout
//! - [`state`]: the items the processors keep — stock, per-minute and trending
//!   counters, behaviour profiles, dead letters, low-stock alerts — and their
//!   keys.
//! - [`fold`]: turns a batch of decoded events into store operations, from a
//!   snapshot of the items it must read (pure, no I/O).
//! - [`pipeline`]: reads the snapshots, folds, and commits the operations and
//!   the new checkpoint in one transaction fenced by the lease; then checks
//!   low-stock alerts and publishes [`Change`]s.
//! - [`parts`]: a batch larger than one transaction, committed in parts
//!   under a note in the lease and marks on its items, so that a replay
//!   after a crash between the parts applies every effect once.
//! - [`read`]: typed reads of every table the pipeline writes (stock,
//!   counters, trending, profiles, alerts, attribution, dead letters): no
//!   caller builds a key or parses a raw item.
//! - [`changes`]: the in-process bus the websocket hub and the recommender
//!   listen to.
//! - [`outbox`]: the entries of the outbox (work that follows a commit,
//!   written in its transaction), among them supplier alerts.
//! - [`trace`]: the trace context an event carries from the request that
//!   published it to the commit that applies it and the push that follows.
//! - [`feed`]: the change feed in the store through which instances sharing
//!   a store see each other's changes.

pub mod changes;
pub mod feed;
pub mod fold;
pub mod outbox;
pub mod parts;
pub mod pipeline;
pub mod read;
pub mod state;
pub mod tables;
pub mod trace;

pub use changes::{Bus, Change};
pub use pipeline::{Checkpoint, CommitError, Pipeline, Record};
pub use tables::Tables;
