//! Recommendations for shopstream: interaction data, candidate sources and
//! their offline evaluation.
//!
//! # Layout
//! - [`data`]: interaction logs (MovieLens, Groceries) read into one shape,
//!   in time order, with dense user and item ids.
//! - [`metrics`]: HR@K, MRR@K, NDCG@K for one held-out target, and
//!   catalogue coverage.
//! - [`baselines`]: most-popular, item-kNN (co-occurrence), session-kNN and
//!   EASE recommenders.
//! - [`model`]: the learned model: candidate sources and a linfa-logistic
//!   ranker over their features.
//! - [`evaluate`]: the chronological protocol (see `docs/evaluation.md`).

pub mod baselines;
pub mod data;
pub mod evaluate;
pub mod metrics;
pub mod model;

/// Something that ranks items for a history.
pub trait Recommender {
    fn name(&self) -> &'static str;

    /// Up to `k` items, best first, for a user whose interactions so far are
    /// `history` (oldest first); never an item for which `exclude` is true.
    fn recommend(&self, history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<u32>;
}
