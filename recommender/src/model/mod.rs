//! The learned model: several candidate sources, and a logistic-regression
//! ranker (linfa-logistic) over their scores, trained chronologically to
//! predict the next interaction.
//!
//! Candidate sources, all fitted from the interaction log:
//! - **next**: what users took *after* an item, within a few steps, weighed
//!   by how close it followed (order and recency, which EASE and plain
//!   co-occurrence ignore);
//! - **co**: item-to-item co-occurrence (cosine of the user sets);
//! - **embedding**: the nearest neighbours of an item in a low-rank
//!   factorisation of the user × item matrix (linfa-linalg's truncated SVD
//!   on a sample of the most popular items and most active users),
//!   precomputed at training time;
//! - **popular**: overall and in the newest tenth of the log (trending);
//! - **again**: the user's own items, where repeats happen (groceries).
//!
//! Features of a candidate for a history: the decayed sum of its *next*
//! scores from the newest history items, its *next* score from the newest
//! item alone, the decayed *co* score, log popularity overall and recently,
//! how often and how recently the user took it. The ranker learns their
//! weights on the last fifth of the training log, with sources fitted on the
//! four fifths before it; the sources are then refitted on everything.
//!
//! # Layout
//! - `sources`: the candidate sources; `embedding`: the embedding source.
//! - `ranker`: [`Hybrid`], the ranker over the sources, and its training.
//! - `validation`: the offline check of each trained ranker.

use serde::{Deserialize, Serialize};

mod embedding;
mod ranker;
mod sources;
#[cfg(test)]
mod tests;
mod validation;

pub use ranker::{Hybrid, TrainingReport};

/// Hashing for maps keyed by item numbers on the serving path: one
/// multiplication (Fibonacci hashing) instead of SipHash, whose resistance
/// to chosen keys item numbers do not need (they are the model's own).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ItemHasher(u64);

impl std::hash::Hasher for ItemHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by item numbers, hashed with [`ItemHasher`].
pub(crate) type ItemMap<V> =
    std::collections::HashMap<u32, V, std::hash::BuildHasherDefault<ItemHasher>>;
/// A set of item numbers, hashed with [`ItemHasher`].
pub(crate) type ItemSet = std::collections::HashSet<u32, std::hash::BuildHasherDefault<ItemHasher>>;

/// Why a model could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No training target had its true next item among the candidates.
    #[error("too little data to train the ranker: {targets} targets, none with a candidate")]
    TooLittleData { targets: usize },
    #[error("the ranker did not fit: {0}")]
    Ranker(#[from] linfa_logistic::error::Error),
    #[error("the Gram matrix cannot be inverted: {0}")]
    Singular(#[from] linfa_linalg::LinalgError),
}
pub use sources::Sources;
pub use validation::Validation;
use {embedding::*, validation::*};

/// The feature names, in the ranker's order.
pub const FEATURES: [&str; N] = [
    "next",
    "next_from_newest",
    "co",
    "popularity",
    "recent_popularity",
    "times_taken",
    "taken_recency",
    "embedding",
];

/// The number of features.
pub const N: usize = 8;

/// Weights used when there is nothing to learn them from: what follows and
/// what goes with the history first, then popularity.
const PRIOR: [f32; N] = [1.0, 1.0, 1.0, 0.1, 0.2, 0.5, 0.5, 0.5];

/// Training knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many steps ahead count as "after".
    pub window: usize,
    /// Neighbours kept per item and source.
    pub keep: usize,
    /// Newest items per user counted for co-occurrence (bounds the pairs).
    pub co_per_user: usize,
    /// Newest distinct history items a request looks at.
    pub recent: usize,
    /// Candidates taken from each source.
    pub per_source: usize,
    /// Training targets for the ranker (spread over the last fifth).
    pub max_targets: usize,
    /// Negative candidates kept per target.
    pub negatives: usize,
    /// Whether users take items again (then their own items are candidates).
    pub repeats: bool,
    /// Item embeddings: the truncated SVD's rank (0: no embedding source)…
    pub embed_dim: usize,
    /// …over this many of the most popular items…
    pub embed_items: usize,
    /// …and this many of the most active users (a dense matrix: the sample
    /// keeps it within memory and time at any catalogue size).
    pub embed_users: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: 5,
            keep: 100,
            co_per_user: 50,
            recent: 20,
            per_source: 100,
            max_targets: 5_000,
            negatives: 30,
            repeats: false,
            embed_dim: 32,
            embed_items: 3_000,
            embed_users: 5_000,
        }
    }
}

/// Why an item was recommended: the source that contributed most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Users took it after this item.
    After(u32),
    /// Users took it together with this item.
    With(u32),
    /// It is near this item in the learned embedding (similar taste).
    Like(u32),
    /// The user took it before.
    Again,
    /// It is popular (recently).
    Popular,
}

/// One ranked item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub item: u32,
    /// The ranker's probability that this is the next item.
    pub score: f32,
    pub reason: Reason,
}
