//! The event envelope every stream carries, its payloads, and the decoder that
//! turns raw stream records into events or into a reason for the dead-letter
//! store. Schema version 1; `docs/events.md` has an example of each type.
//!
//! ```json
//! {"id": "…", "type": "stock.adjusted", "occurred_at": "2026-11-23T10:00:00Z",
//!  "source": "warehouse-7", "version": 1, "data": { …the payload… }}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Currency, Price, Product, ProductId};

/// The schema version written in every envelope.
pub const SCHEMA_VERSION: u32 = 1;
/// Records larger than this are refused as oversized.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// The most units one line or adjustment may move: a bound on typos.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// The longest user, session or order id, in bytes. Ids become parts of
/// store keys and stream partition keys, whose length is bounded
/// (DynamoDB: 2,048 bytes; Kinesis: 256 characters).
pub const MAX_ID_BYTES: usize = 128;
/// The longest `recommendation_id`, in bytes.
pub const MAX_RECOMMENDATION_ID_BYTES: usize = 256;

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
    /// The W3C trace context (`traceparent`) of the request that published
    /// it, when that request was traced: the consumer's spans join the same
    /// trace. A malformed one is dropped, never a reason to refuse the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Whether `s` has the shape of a W3C `traceparent` (version 00):
/// `00-{32 hex}-{16 hex}-{2 hex}`.
pub fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// Who a behaviour event is about: a signed-in user or an anonymous session.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Session(String),
}

impl Subject {
    /// The stream partition key and store key: `user:{id}` or `session:{id}`.
    pub fn key(&self) -> String {
        let (kind, id) = match self {
            Subject::User(u) => ("user:", u),
            Subject::Session(s) => ("session:", s),
        };
        let mut key = String::with_capacity(kind.len() + id.len());
        key.push_str(kind);
        key.push_str(id);
        key
    }
}

/// `user_id` or `session_id` (a user id wins if both are given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl Actor {
    pub fn subject(&self) -> Option<Subject> {
        match (&self.user_id, &self.session_id) {
            (Some(u), _) if !u.is_empty() => Some(Subject::User(u.clone())),
            (_, Some(s)) if !s.is_empty() => Some(Subject::Session(s.clone())),
            _ => None,
        }
    }
}

/// One line of a purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseLine {
    pub product_id: ProductId,
    pub quantity: i64,
    pub unit_price: Price,
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
    /// Stock moved by `delta` units (negative: out), for a reason such as
    /// `received`, `damaged`, `returned`. Deltas commute.
    #[serde(rename = "stock.adjusted")]
    StockAdjusted {
        product_id: ProductId,
        delta: i64,
        reason: String,
    },
    /// A warehouse counted `on_hand` units. Applies only if `sequence` is
    /// newer than the last count applied for the product.
    #[serde(rename = "stock.counted")]
    StockCounted {
        product_id: ProductId,
        on_hand: i64,
        sequence: u64,
    },
    /// A user or anonymous session viewed a product.
    #[serde(rename = "browse.viewed")]
    BrowseViewed {
        #[serde(flatten)]
        actor: Actor,
        product_id: ProductId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recommendation_id: Option<String>,
    },
    /// A product went into a basket.
    #[serde(rename = "basket.added")]
    BasketAdded {
        #[serde(flatten)]
        actor: Actor,
        product_id: ProductId,
        quantity: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recommendation_id: Option<String>,
    },
    /// An order was paid.
    #[serde(rename = "purchase.completed")]
    PurchaseCompleted {
        order_id: String,
        #[serde(flatten)]
        actor: Actor,
        lines: Vec<PurchaseLine>,
        total: Price,
        currency: Currency,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recommendation_id: Option<String>,
        /// True when the shop's own checkout already took the units out of
        /// stock (it reserved them, then sold them): the inventory processor
        /// then leaves stock alone and only analytics and behaviour count
        /// the purchase. False (the default) for purchases made elsewhere,
        /// such as a till, which take stock when they are applied.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stock_settled: bool,
    },
    /// An order moved to another status.
    #[serde(rename = "order.status_changed")]
    OrderStatusChanged {
        order_id: String,
        #[serde(flatten)]
        actor: Actor,
        status: String,
    },
}

/// Every event type, as written in `"type"`.
pub const EVENT_TYPES: &[&str] = &[
    "product.upserted",
    "product.deleted",
    "stock.adjusted",
    "stock.counted",
    "browse.viewed",
    "basket.added",
    "purchase.completed",
    "order.status_changed",
];

impl EventPayload {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventPayload::ProductUpserted(_) => "product.upserted",
            EventPayload::ProductDeleted { .. } => "product.deleted",
            EventPayload::StockAdjusted { .. } => "stock.adjusted",
            EventPayload::StockCounted { .. } => "stock.counted",
            EventPayload::BrowseViewed { .. } => "browse.viewed",
            EventPayload::BasketAdded { .. } => "basket.added",
            EventPayload::PurchaseCompleted { .. } => "purchase.completed",
            EventPayload::OrderStatusChanged { .. } => "order.status_changed",
        }
    }

    /// The stream partition key: the product id for catalogue and stock
    /// events, the user or session for behaviour events, the order for order
    /// events without a known actor.
    pub fn partition_key(&self) -> String {
        match self {
            EventPayload::ProductUpserted(p) => p.id.to_string(),
            EventPayload::ProductDeleted { product_id }
            | EventPayload::StockAdjusted { product_id, .. }
            | EventPayload::StockCounted { product_id, .. } => product_id.to_string(),
            EventPayload::BrowseViewed {
                actor, product_id, ..
            }
            | EventPayload::BasketAdded {
                actor, product_id, ..
            } => actor
                .subject()
                .map(|s| s.key())
                .unwrap_or_else(|| product_id.to_string()),
            EventPayload::PurchaseCompleted {
                actor, order_id, ..
            }
            | EventPayload::OrderStatusChanged {
                actor, order_id, ..
            } => actor
                .subject()
                .map(|s| s.key())
                .unwrap_or_else(|| order_id.clone()),
        }
    }

    /// Whether this is about a customer's behaviour (as opposed to the
    /// catalogue or stock), which customers may send about themselves.
    pub fn is_behaviour(&self) -> bool {
        matches!(
            self,
            EventPayload::BrowseViewed { .. } | EventPayload::BasketAdded { .. }
        )
    }

    /// Rules the types cannot say: positive quantities, a subject for
    /// behaviour, bounded sizes.
    fn check(&self) -> Result<(), Rejection> {
        let invalid =
            |detail: String| Err(Rejection::new(DeadLetterReason::InvalidPayload, detail));
        let negative =
            |detail: String| Err(Rejection::new(DeadLetterReason::NegativeQuantity, detail));
        if let Some(actor) = self.actor() {
            id_field("user_id", actor.user_id.as_deref(), MAX_ID_BYTES)?;
            id_field("session_id", actor.session_id.as_deref(), MAX_ID_BYTES)?;
        }
        id_field(
            "recommendation_id",
            self.recommendation_id(),
            MAX_RECOMMENDATION_ID_BYTES,
        )?;
        match self {
            EventPayload::StockAdjusted { delta, reason, .. } => {
                if *delta == 0 || delta.abs() > MAX_QUANTITY {
                    return invalid(format!(
                        "delta must be non-zero and at most {MAX_QUANTITY} units either way"
                    ));
                }
                if reason.is_empty() || reason.len() > 64 {
                    return invalid("reason must be 1 to 64 characters".into());
                }
            }
            EventPayload::StockCounted { on_hand, .. } => {
                if *on_hand < 0 {
                    return negative(format!("on_hand must not be negative, got {on_hand}"));
                }
                if *on_hand > MAX_QUANTITY * 1000 {
                    return invalid("on_hand is implausibly large".into());
                }
            }
            EventPayload::BrowseViewed { actor, .. } => {
                if actor.subject().is_none() {
                    return invalid("user_id or session_id is required".into());
                }
            }
            EventPayload::BasketAdded {
                actor, quantity, ..
            } => {
                if actor.subject().is_none() {
                    return invalid("user_id or session_id is required".into());
                }
                if *quantity <= 0 {
                    return negative(format!("quantity must be positive, got {quantity}"));
                }
                if *quantity > MAX_QUANTITY {
                    return invalid(format!("quantity must be at most {MAX_QUANTITY}"));
                }
            }
            EventPayload::PurchaseCompleted {
                lines, order_id, ..
            } => {
                if order_id.is_empty() || order_id.len() > 128 {
                    return invalid("order_id must be 1 to 128 characters".into());
                }
                if lines.is_empty() || lines.len() > 500 {
                    return invalid("lines must hold 1 to 500 lines".into());
                }
                for (i, l) in lines.iter().enumerate() {
                    if l.quantity <= 0 {
                        return negative(format!(
                            "lines[{i}].quantity must be positive, got {}",
                            l.quantity
                        ));
                    }
                    if l.quantity > MAX_QUANTITY {
                        return invalid(format!(
                            "lines[{i}].quantity must be at most {MAX_QUANTITY}"
                        ));
                    }
                }
            }
            EventPayload::OrderStatusChanged {
                order_id, status, ..
            } => {
                if order_id.is_empty() || status.is_empty() || status.len() > 32 {
                    return invalid("order_id and status are required".into());
                }
                id_field("order_id", Some(order_id), MAX_ID_BYTES)?;
            }
            EventPayload::ProductUpserted(p) => {
                // The same rules as the product API's.
                let body = serde_json::to_value(p).unwrap_or_default();
                if let Err(errors) =
                    crate::ProductDraft::parse(&body, crate::product::DraftMode::Replace)
                {
                    return invalid(errors.to_string());
                }
            }
            EventPayload::ProductDeleted { .. } => {}
        }
        Ok(())
    }

    /// Who a behaviour, purchase or order event is about.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            EventPayload::BrowseViewed { actor, .. }
            | EventPayload::BasketAdded { actor, .. }
            | EventPayload::PurchaseCompleted { actor, .. }
            | EventPayload::OrderStatusChanged { actor, .. } => Some(actor),
            _ => None,
        }
    }

    /// The recommendation an event follows, if it says so.
    pub fn recommendation_id(&self) -> Option<&str> {
        match self {
            EventPayload::BrowseViewed {
                recommendation_id, ..
            }
            | EventPayload::BasketAdded {
                recommendation_id, ..
            }
            | EventPayload::PurchaseCompleted {
                recommendation_id, ..
            } => recommendation_id.as_deref(),
            _ => None,
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
            traceparent: None,
        }
    }

    /// Decodes one stream record. Anything that is not a valid event comes
    /// back as a [`Rejection`] saying why, for the dead-letter store.
    pub fn decode(bytes: &[u8]) -> Result<Self, Rejection> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(Rejection::new(
                DeadLetterReason::Oversized,
                format!("{} bytes, the limit is {MAX_EVENT_BYTES}", bytes.len()),
            ));
        }
        // Checked once here, so the parser need not check each string.
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Rejection::new(
                DeadLetterReason::MalformedJson,
                format!("the record is not UTF-8: {e}"),
            )
        })?;
        let raw: RawEnvelope<'_> = serde_json::from_str(text).map_err(|e| {
            let reason = if e.is_syntax() || e.is_eof() {
                DeadLetterReason::MalformedJson
            } else {
                DeadLetterReason::InvalidPayload
            };
            Rejection::new(reason, e.to_string())
        })?;
        if raw.version.unwrap_or(SCHEMA_VERSION) != SCHEMA_VERSION {
            return Err(Rejection::new(
                DeadLetterReason::UnsupportedVersion,
                format!(
                    "schema version {} is not supported",
                    raw.version.unwrap_or(0)
                ),
            ));
        }
        if !EVENT_TYPES.contains(&raw.kind) {
            return Err(Rejection::new(
                DeadLetterReason::UnknownType,
                format!("unknown event type {:?}", raw.kind),
            ));
        }
        let payload = payload_from_parts(raw.kind, raw.data)
            .map_err(|e| Rejection::new(DeadLetterReason::InvalidPayload, format!("data: {e}")))?;
        payload.check()?;
        let occurred_at = OffsetDateTime::parse(
            raw.occurred_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| {
            Rejection::new(
                DeadLetterReason::InvalidPayload,
                format!("occurred_at: {e}"),
            )
            .at("occurred_at")
        })?;
        if raw.source.is_empty()
            || raw.source.len() > 128
            || raw.source.chars().any(char::is_control)
        {
            return Err(Rejection::new(
                DeadLetterReason::InvalidPayload,
                "source must be 1 to 128 bytes of printable characters",
            )
            .at("source"));
        }
        Ok(Event {
            id: raw.id,
            occurred_at,
            source: raw.source.to_owned(),
            version: SCHEMA_VERSION,
            payload,
            traceparent: raw
                .traceparent
                .filter(|t| is_traceparent(t))
                .map(str::to_owned),
        })
    }
}

/// The adjacently tagged payload from its two parts, as if
/// `{"type": kind, "data": data}` were parsed, without writing that text out
/// and parsing it again: `data` is parsed once, where it lies in the record.
fn payload_from_parts(kind: &str, data: Option<&RawValue>) -> serde_json::Result<EventPayload> {
    use serde::de::{
        DeserializeSeed, MapAccess,
        value::{BorrowedStrDeserializer, MapAccessDeserializer},
    };
    struct Parts<'a> {
        kind: &'a str,
        data: &'a RawValue,
        next: u8,
    }
    impl<'de> MapAccess<'de> for Parts<'de> {
        type Error = serde_json::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> serde_json::Result<Option<K::Value>> {
            let key = match self.next {
                0 => "type",
                1 => "data",
                _ => return Ok(None),
            };
            seed.deserialize(BorrowedStrDeserializer::new(key))
                .map(Some)
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> serde_json::Result<V::Value> {
            self.next += 1;
            if self.next == 1 {
                seed.deserialize(BorrowedStrDeserializer::new(self.kind))
            } else {
                seed.deserialize(self.data)
            }
        }
    }
    EventPayload::deserialize(MapAccessDeserializer::new(Parts {
        kind,
        data: data.unwrap_or(RawValue::NULL),
        next: 0,
    }))
}

/// Refuses an id that is empty, longer than `max` bytes or holds control
/// characters (`None`: not given, which the caller allows or not).
fn id_field(name: &str, value: Option<&str>, max: usize) -> Result<(), Rejection> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => {
            Err(Rejection::new(
                DeadLetterReason::InvalidPayload,
                format!("{name} must be 1 to {max} bytes of printable characters"),
            )
            .at(format!("data.{name}")))
        }
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'a str,
    occurred_at: &'a str,
    source: &'a str,
    #[serde(default)]
    version: Option<u32>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    traceparent: Option<&'a str>,
}

/// Why a record went to the dead-letter store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    MalformedJson,
    UnknownType,
    /// Missing or wrongly typed fields, or values out of range.
    InvalidPayload,
    NegativeQuantity,
    Oversized,
    UnsupportedVersion,
    /// A valid event whose effects the store refused for good (an item or
    /// key too large, a request it finds invalid): isolated from its batch
    /// so the rest commits.
    Unprocessable,
}

impl DeadLetterReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::MalformedJson => "malformed_json",
            DeadLetterReason::UnknownType => "unknown_type",
            DeadLetterReason::InvalidPayload => "invalid_payload",
            DeadLetterReason::NegativeQuantity => "negative_quantity",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::UnsupportedVersion => "unsupported_version",
            DeadLetterReason::Unprocessable => "unprocessable",
        }
    }
}

/// A record that is not a valid event, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: DeadLetterReason,
    pub detail: String,
    /// The field at fault, where one is: an envelope field (`source`,
    /// `occurred_at`) or a payload field under `data.` (`data.session_id`).
    pub field: Option<String>,
}

impl Rejection {
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            field: None,
        }
    }

    /// The same rejection, naming the field at fault.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(kind: &str, data: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": Uuid::now_v7(), "type": kind, "occurred_at": "2026-11-23T10:00:00Z",
            "source": "test", "data": data
        }))
        .unwrap()
    }

    fn reason(bytes: &[u8]) -> DeadLetterReason {
        Event::decode(bytes).unwrap_err().reason
    }

    #[test]
    fn envelope_round_trips_with_type_and_data() {
        let e = Event::new(
            "api",
            EventPayload::ProductDeleted {
                product_id: ProductId::new(),
            },
        );
        let json = serde_json::to_vec(&e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["type"], "product.deleted");
        assert!(v["data"]["product_id"].is_string());
        assert_eq!(Event::decode(&json).unwrap(), e);
    }

    #[test]
    fn every_type_decodes() {
        let p = ProductId::new().to_string();
        let cases = [
            (
                "stock.adjusted",
                json!({"product_id": p, "delta": -3, "reason": "damaged"}),
            ),
            (
                "stock.counted",
                json!({"product_id": p, "on_hand": 12, "sequence": 7}),
            ),
            (
                "browse.viewed",
                json!({"session_id": "s1", "product_id": p}),
            ),
            (
                "basket.added",
                json!({"user_id": "u1", "product_id": p, "quantity": 2, "recommendation_id": "r"}),
            ),
            (
                "purchase.completed",
                json!({"order_id": "o1", "user_id": "u1",
                "lines": [{"product_id": p, "quantity": 2, "unit_price": "9.99"}], "total": "19.98", "currency": "EUR"}),
            ),
            (
                "order.status_changed",
                json!({"order_id": "o1", "status": "shipped"}),
            ),
            ("product.deleted", json!({"product_id": p})),
        ];
        for (kind, data) in cases {
            let e = Event::decode(&envelope(kind, data)).unwrap_or_else(|r| panic!("{kind}: {r}"));
            assert_eq!(e.payload.type_name(), kind);
            let again = Event::decode(&serde_json::to_vec(&e).unwrap()).unwrap();
            assert_eq!(again, e, "{kind} round-trips");
        }
    }

    #[test]
    fn bad_records_get_their_reason() {
        let p = ProductId::new().to_string();
        assert_eq!(reason(b"{not json"), DeadLetterReason::MalformedJson);
        assert_eq!(reason(b""), DeadLetterReason::MalformedJson);
        assert_eq!(
            reason(b"{\"id\": \"\xff\xfe\"}"),
            DeadLetterReason::MalformedJson
        );
        assert_eq!(
            reason(&envelope("stock.teleported", json!({}))),
            DeadLetterReason::UnknownType
        );
        // No `data` at all: read as null, which no payload is.
        let no_data = serde_json::to_vec(&json!({
            "id": Uuid::now_v7(), "type": "stock.adjusted",
            "occurred_at": "2026-11-23T10:00:00Z", "source": "test"
        }))
        .unwrap();
        assert_eq!(reason(&no_data), DeadLetterReason::InvalidPayload);
        assert_eq!(
            reason(&envelope(
                "stock.adjusted",
                json!({"product_id": p, "reason": "x"})
            )),
            DeadLetterReason::InvalidPayload
        );
        assert_eq!(
            reason(&envelope(
                "stock.adjusted",
                json!({"product_id": p, "delta": "3", "reason": "x"})
            )),
            DeadLetterReason::InvalidPayload
        );
        assert_eq!(
            reason(&envelope(
                "stock.adjusted",
                json!({"product_id": "", "delta": 3, "reason": "x"})
            )),
            DeadLetterReason::InvalidPayload
        );
        assert_eq!(
            reason(&envelope(
                "basket.added",
                json!({"user_id": "u", "product_id": p, "quantity": -2})
            )),
            DeadLetterReason::NegativeQuantity
        );
        assert_eq!(
            reason(&envelope(
                "stock.counted",
                json!({"product_id": p, "on_hand": -1, "sequence": 1})
            )),
            DeadLetterReason::NegativeQuantity
        );
        assert_eq!(
            reason(&envelope("browse.viewed", json!({"product_id": p}))),
            DeadLetterReason::InvalidPayload
        );
        let big = envelope(
            "stock.adjusted",
            json!({"product_id": p, "delta": 1, "reason": "x".repeat(MAX_EVENT_BYTES)}),
        );
        assert_eq!(reason(&big), DeadLetterReason::Oversized);
        let mut v: serde_json::Value =
            serde_json::from_slice(&envelope("product.deleted", json!({"product_id": p}))).unwrap();
        v["version"] = json!(2);
        assert_eq!(
            reason(&serde_json::to_vec(&v).unwrap()),
            DeadLetterReason::UnsupportedVersion
        );
        v["version"] = json!(1);
        v["occurred_at"] = json!("yesterday");
        assert_eq!(
            reason(&serde_json::to_vec(&v).unwrap()),
            DeadLetterReason::InvalidPayload
        );
    }

    #[test]
    fn behaviour_partitions_by_subject() {
        let p = ProductId::new();
        let viewed = EventPayload::BrowseViewed {
            actor: Actor {
                user_id: Some("u1".into()),
                session_id: Some("s1".into()),
            },
            product_id: p,
            recommendation_id: None,
        };
        assert_eq!(viewed.partition_key(), "user:u1");
        let adjusted = EventPayload::StockAdjusted {
            product_id: p,
            delta: 1,
            reason: "x".into(),
        };
        assert_eq!(adjusted.partition_key(), p.to_string());
    }

    #[test]
    fn identifiers_and_free_text_are_bounded_and_name_their_field() {
        let p = ProductId::new();
        let rejected =
            |kind: &str, data: serde_json::Value| Event::decode(&envelope(kind, data)).unwrap_err();
        // A session id that would make a partition key over DynamoDB's 2,048 bytes.
        let r = rejected(
            "browse.viewed",
            json!({"session_id": "s".repeat(3000), "product_id": p}),
        );
        assert_eq!(r.reason, DeadLetterReason::InvalidPayload);
        assert_eq!(r.field.as_deref(), Some("data.session_id"));
        let r = rejected(
            "basket.added",
            json!({"user_id": "u".repeat(MAX_ID_BYTES + 1), "product_id": p, "quantity": 1}),
        );
        assert_eq!(r.field.as_deref(), Some("data.user_id"));
        let r = rejected(
            "browse.viewed",
            json!({"session_id": "a\u{0}b", "product_id": p}),
        );
        assert_eq!(
            r.field.as_deref(),
            Some("data.session_id"),
            "control characters"
        );
        let r = rejected(
            "browse.viewed",
            json!({"session_id": "s", "product_id": p, "recommendation_id": "r".repeat(300)}),
        );
        assert_eq!(r.field.as_deref(), Some("data.recommendation_id"));
        let r = rejected(
            "order.status_changed",
            json!({"order_id": "o".repeat(129), "status": "packed"}),
        );
        assert_eq!(r.field.as_deref(), Some("data.order_id"));
        // At the limit is fine.
        assert!(
            Event::decode(&envelope(
                "browse.viewed",
                json!({"session_id": "s".repeat(MAX_ID_BYTES), "product_id": p})
            ))
            .is_ok()
        );
        // The envelope's source, too.
        let mut v: serde_json::Value = serde_json::from_slice(&envelope(
            "browse.viewed",
            json!({"session_id": "s", "product_id": p}),
        ))
        .unwrap();
        v["source"] = json!("x".repeat(129));
        let r = Event::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("source"));
    }

    #[test]
    fn product_events_follow_the_product_rules() {
        let now = crate::now();
        let draft = |name: &str| crate::ProductDraft {
            sku: "SKU-1".into(),
            name: name.into(),
            description: String::new(),
            price: crate::Price::parse("9.99").unwrap(),
            currency: crate::Currency::parse("EUR").unwrap(),
            category: "socks".into(),
            supplier_id: None,
            image_url: None,
            attributes: Default::default(),
            low_stock_threshold: 5,
        };
        let good = Event::new(
            "api",
            EventPayload::ProductUpserted(Box::new(
                draft("Merino socks").into_product(ProductId::new(), now),
            )),
        );
        let bytes = serde_json::to_vec(&good).unwrap();
        assert_eq!(Event::decode(&bytes).unwrap(), good);
        let long = Event::new(
            "api",
            EventPayload::ProductUpserted(Box::new(
                draft(&"n".repeat(300)).into_product(ProductId::new(), now),
            )),
        );
        let r = Event::decode(&serde_json::to_vec(&long).unwrap()).unwrap_err();
        assert_eq!(r.reason, DeadLetterReason::InvalidPayload);
        assert!(r.detail.contains("name"), "{}", r.detail);
    }
}
