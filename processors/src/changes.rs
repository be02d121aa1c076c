//! The in-process bus: what changed after a commit.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// One change, published after the commit that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A product's stock as it is now.
    StockLevel {
        product_id: String,
        on_hand: i64,
        reserved: i64,
        available: i64,
        backorder: i64,
        /// The stock item's version: a change with a version a client has
        /// already seen is stale.
        version: u64,
        /// When the commit that made it was done (Unix milliseconds).
        #[serde(default)]
        committed_at: i64,
        /// The trace of the request whose event made it, when traced: the
        /// websocket push joins it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// A product's available stock fell below its threshold.
    LowStockAlert(crate::state::Alert),
    /// Counters grew in this minute (totals over all products).
    AnalyticsTick {
        minute: String,
        views: i64,
        basket_adds: i64,
        purchases: i64,
    },
    /// Events attributed to a model version's recommendations (the counts
    /// this commit added).
    RecommendationTick {
        model_version: String,
        clicks: i64,
        basket_adds: i64,
        purchases: i64,
    },
    /// A product was created, changed or deleted in the catalogue (caches
    /// of it are stale).
    ProductChanged { product_id: String },
    /// A user's or session's behaviour profile changed.
    ProfileUpdated { subject: String },
    /// An order changed status.
    OrderUpdated {
        order_id: String,
        user_id: String,
        status: String,
        version: u64,
    },
}

impl Change {
    /// A product's stock level as committed, now.
    pub fn stock(product_id: &str, s: &crate::state::Stock) -> Self {
        Change::StockLevel {
            product_id: product_id.to_owned(),
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
            backorder: s.backorder,
            version: s.version,
            committed_at: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                as i64,
            traceparent: None,
        }
    }
}

/// A broadcast bus. Slow subscribers lose the oldest changes (they are told
/// how many), never block the pipeline.
#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<Change>,
    /// Where this instance's own changes also go, for the other instances
    /// (see [`crate::feed`]).
    feed: Arc<OnceLock<mpsc::Sender<Change>>>,
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
            feed: Arc::default(),
        }
    }

    /// Publishes a change this instance made.
    pub fn publish(&self, change: Change) {
        if let Some(feed) = self.feed.get()
            && feed.try_send(change.clone()).is_err()
        {
            metrics::counter!("shopstream_feed_dropped_total").increment(1);
        }
        // No subscriber is not an error.
        let _ = self.tx.send(change);
    }

    /// Publishes a change another instance made (it is not fed back).
    pub fn publish_remote(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    /// From now on, this instance's changes are also sent to the returned
    /// receiver (once per bus).
    pub fn attach_feed(&self, capacity: usize) -> mpsc::Receiver<Change> {
        let (tx, rx) = mpsc::channel(capacity);
        let _ = self.feed.set(tx);
        rx
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(4096)
    }
}
