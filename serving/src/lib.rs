//! shopstream's recommendation serving, between the pure `recommender` and
//! the HTTP `api`.
//!
//! # Layout
//! - [`model`]: the trained model as served and persisted ([`model::Trained`],
//!   [`model::MODEL_KEY`]).
//! - [`training`]: [`Recs`], the service: reads the interaction log, fits off
//!   the async runtime, persists and swaps the model in; the retrain loop.
//! - [`candidates`]: the model's candidates and their [`candidates::Source`].
//! - [`catalogue`]: the port the rules read (product, stock, newest in a
//!   category, trending), with the store adapter and an in-memory one.
//! - [`rules`]: the shop's live rules and the order of sources.
//! - [`attribution`]: impressions counted by one writer task.
//! - [`ids`]: recommendation ids the server issues and verifies.

pub mod attribution;
pub mod candidates;
pub mod catalogue;
pub mod ids;
pub mod model;
pub mod rules;
pub mod training;

pub use ids::RecoIds;
pub use training::{Progress, Recs, Retrain, TrainError};
