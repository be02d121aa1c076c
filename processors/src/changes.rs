//! The in-process bus: what changed after a commit.

use serde::Serialize;
use tokio::sync::broadcast;

/// One change, published after the commit that made it.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// A product's stock level as read from the store.
    pub fn stock(product_id: &str, s: &crate::state::Stock) -> Self {
        Change::StockLevel {
            product_id: product_id.to_owned(),
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
            backorder: s.backorder,
            version: s.version,
        }
    }
}

/// A broadcast bus. Slow subscribers lose the oldest changes (they are told
/// how many), never block the pipeline.
#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<Change>,
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn publish(&self, change: Change) {
        // No subscriber is not an error.
        let _ = self.tx.send(change);
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
