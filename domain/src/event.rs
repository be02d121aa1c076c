//! The event envelope every stream carries. Version 1.
//!
//! ```json
//! {"id": "…", "type": "product.upserted", "occurred_at": "2026-11-23T10:00:00Z",
//!  "source": "api", "data": { …the payload… }}
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Product, ProductId};

/// The schema version written in every envelope.
pub const SCHEMA_VERSION: u32 = 1;

/// One event, as it travels on the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event; consumers de-duplicate on it where they need to.
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Who made it: `api`, `cli`, a warehouse system's name…
    pub source: String,
    #[serde(default = "schema_version")]
    pub version: u32,
    #[serde(flatten)]
    pub payload: EventPayload,
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// What happened. Serialised as `"type"` plus `"data"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventPayload {
    /// A product was created or changed: the whole product as it is now.
    #[serde(rename = "product.upserted")]
    ProductUpserted(Box<Product>),
    /// A product was deleted.
    #[serde(rename = "product.deleted")]
    ProductDeleted { product_id: ProductId },
}

impl EventPayload {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventPayload::ProductUpserted(_) => "product.upserted",
            EventPayload::ProductDeleted { .. } => "product.deleted",
        }
    }

    /// The stream partition key: the product id for catalogue events.
    pub fn partition_key(&self) -> String {
        match self {
            EventPayload::ProductUpserted(p) => p.id.to_string(),
            EventPayload::ProductDeleted { product_id } => product_id.to_string(),
        }
    }
}

impl Event {
    pub fn new(source: impl Into<String>, payload: EventPayload) -> Self {
        Self {
            id: Uuid::now_v7(),
            occurred_at: crate::now(),
            source: source.into(),
            version: SCHEMA_VERSION,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_type_and_data() {
        let e = Event::new(
            "api",
            EventPayload::ProductDeleted {
                product_id: ProductId::new(),
            },
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "product.deleted");
        assert!(json["data"]["product_id"].is_string());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
