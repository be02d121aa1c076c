//! The outbox's entries: work that must follow a commit — events to
//! publish, notifications to send, refunds, supplier alerts — written in the
//! same transaction as the state change it follows. `commerce::outbox::Relay`
//! carries them out.

use domain::{Event, clock::now_ms};
use serde::{Deserialize, Serialize};
use storage::{Cond, Key, StoreError, Table, TxOp, to_item};

use crate::state::Alert;

/// A message to a customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    /// `order_confirmation` or `order_status`.
    pub kind: String,
    pub order_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub subject: String,
    pub body: String,
}

/// One piece of work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum Work {
    Publish {
        event: Box<Event>,
    },
    Notify {
        notification: Notification,
    },
    Refund {
        order_id: String,
    },
    /// A low-stock alert to deliver to its supplier: written in the
    /// transaction that raises the alert, so once per crossing.
    SupplierAlert {
        alert: Alert,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub work: Work,
    #[serde(default)]
    pub attempts: u32,
    /// Milliseconds since the epoch before which no relay picks it up.
    #[serde(default)]
    pub not_before: i64,
}

/// The outbox's one partition.
pub const PK: &str = "outbox";

/// The transaction operation that puts `work` in the outbox.
pub fn put(mut work: Work) -> Result<TxOp, StoreError> {
    // An event published later by the relay still joins the trace of the
    // request that made it.
    if let Work::Publish { event } = &mut work
        && event.traceparent.is_none()
    {
        event.traceparent = crate::trace::current();
    }
    let key = Key::new(PK, format!("{:013}#{}", now_ms(), uuid::Uuid::now_v7()));
    Ok(TxOp::Put {
        table: Table::Outbox,
        item: to_item(
            &key,
            &Entry {
                work,
                attempts: 0,
                not_before: 0,
            },
        )?,
        cond: Some(Cond::NotExists),
    })
}
