//! shopstream's storage: one small port ([`Store`]) with two adapters, and the
//! repositories the rest of the service uses on top of it.
//!
//! # Layout
//! - [`port`]: the [`Store`] trait, its contract, and the types of its calls
//!   (keys, conditions, updates, queries, transactions).
//! - [`expr`]: conditions, updates and item sizes evaluated in memory — the
//!   embedded adapter's semantics, written to match DynamoDB's.
//! - [`embedded`]: the default adapter, one redb file in the data directory,
//!   with a single writer thread that commits waiting writes together; items
//!   on disk in a compact binary encoding (`codec`).
//! - [`dynamo`]: the DynamoDB adapter (`aws-sdk-dynamodb`), items stored as
//!   native attributes.
//! - [`users`], [`products`]: repositories for the domain's entities.
//! - [`faulty`]: a real store with faults injected, for fault tests.
//!
//! Nothing outside this crate knows which database is underneath.

pub mod blobs;
mod codec;
pub mod dynamo;
pub mod embedded;
mod error;
pub mod expr;
pub mod faulty;
pub mod port;
pub mod products;
mod tables;
pub mod users;

pub use error::{Contention, StoreError, StoreResult};
pub use port::{
    Cond, Item, Key, MAX_PAGE, PK, Page, Query, SK, SortRange, Store, TxOp, Update, Value,
    from_item, to_item,
};
pub use tables::Table;
