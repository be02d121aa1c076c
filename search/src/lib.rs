//! shopstream's product search: a [tantivy] index of the catalogue with
//! each product's in-stock flag, in memory on every instance.
//!
//! # Layout
//! - [`index`]: [`SearchIndex`], the schema, the analyzers, the writes and
//!   the ranked, typo-tolerant queries with category counts and filters.
//! - [`keeper`]: [`Keeper`], the worker that builds the index from the
//!   catalogue on start and keeps it current from the change bus.

pub mod index;
pub mod keeper;

pub use index::{Hit, SearchError, SearchIndex, SearchRequest, SearchResults};
pub use keeper::Keeper;
