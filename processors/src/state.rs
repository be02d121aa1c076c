//! The items the processors keep, and where they live.

use std::collections::VecDeque;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use storage::Key;
use time::OffsetDateTime;

/// How many recent views and basket adds a profile keeps.
pub const RECENT: usize = 50;
/// How many purchased products a profile keeps.
pub const PURCHASES: usize = 200;

/// One product's stock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    #[serde(default)]
    pub on_hand: i64,
    #[serde(default)]
    pub reserved: i64,
    /// `on_hand - reserved`, kept as its own attribute so that conditions can
    /// test it.
    #[serde(default)]
    pub available: i64,
    /// Units sold that were not in stock.
    #[serde(default)]
    pub backorder: i64,
    /// The warehouse sequence of the last count applied.
    #[serde(default)]
    pub counted_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_stock_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// True once stock has been at or above the threshold: the next fall
    /// below it raises one alert and disarms it.
    #[serde(default)]
    pub alert_armed: bool,
    #[serde(default)]
    pub deleted: bool,
    /// Grows with every change; snapshot-based writes are conditional on it.
    #[serde(default)]
    pub version: u64,
    /// The product's catalogue and stock events applied last (see [`Seen`]).
    #[serde(default, skip_serializing_if = "Seen::is_empty")]
    pub seen: Seen,
}

pub fn stock_key(product_id: &str) -> Key {
    Key::new("inventory", product_id)
}

/// Counters of one minute (or hour), for one product or for the whole shop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub views: i64,
    #[serde(default)]
    pub basket_adds: i64,
    #[serde(default)]
    pub purchases: i64,
    #[serde(default)]
    pub units: i64,
    #[serde(default, with = "rust_decimal::serde::str")]
    pub revenue: Decimal,
}

impl Counters {
    /// How much a product is trending: a purchase weighs 10, a basket add 3,
    /// a view 1. The one definition every ranking of "trending" uses.
    pub fn trend_score(&self) -> i64 {
        self.purchases * 10 + self.basket_adds * 3 + self.views
    }

    /// Reads counters from a stored item. Numbers are parsed from their exact
    /// decimal text (revenue never passes through a float).
    pub fn from_item(item: &storage::Item) -> Self {
        let int = |a: &str| match item.get(a) {
            Some(storage::Value::N(n)) => n.parse::<i64>().unwrap_or_default(),
            _ => 0,
        };
        let revenue = match item.get("revenue") {
            Some(storage::Value::N(n)) => n.parse::<Decimal>().unwrap_or_default(),
            _ => Decimal::ZERO,
        };
        Self {
            views: int("views"),
            basket_adds: int("basket_adds"),
            purchases: int("purchases"),
            units: int("units"),
            revenue,
        }
    }

    /// Adds `per_mille`/1000 of `other`, rounded to the nearest whole count
    /// (revenue to the cent): the share of an hour's counters that a
    /// sliding window still covers.
    pub fn add_share(&mut self, other: &Counters, per_mille: i64) {
        let share = |n: i64| (n * per_mille + 500).div_euclid(1000);
        self.views += share(other.views);
        self.basket_adds += share(other.basket_adds);
        self.purchases += share(other.purchases);
        self.units += share(other.units);
        self.revenue +=
            (other.revenue * Decimal::from(per_mille) / Decimal::from(1000)).round_dp(2);
    }

    pub fn add(&mut self, other: &Counters) {
        self.views += other.views;
        self.basket_adds += other.basket_adds;
        self.purchases += other.purchases;
        self.units += other.units;
        self.revenue += other.revenue;
    }

    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// The scope of all products together.
pub const ALL: &str = "all";

/// `2026-11-23T10:05`: the minute an instant falls in (UTC).
pub fn minute_of(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `2026-11-23T10`: the hour an instant falls in (UTC).
pub fn hour_of(t: OffsetDateTime) -> String {
    minute_of(t)[..13].to_owned()
}

/// Per-minute counters of a scope: [`ALL`], the whole shop. (Versions
/// before 0.1.0's shop-scale step also kept them per product; those items
/// are no longer written or read.)
pub fn minute_key(scope: &str, minute: &str) -> Key {
    Key::new(format!("minute#{scope}"), minute)
}

/// A product's counters in one hour's trending partition: what trending
/// ranks, and the product's own hourly series.
pub fn trend_hour_key(hour: &str, product_id: &str) -> Key {
    Key::new(format!("trend#h#{hour}"), product_id)
}

/// One viewed or basketed product, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub product_id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

/// What one user or anonymous session did, for the recommender.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Newest first, at most [`RECENT`].
    #[serde(default)]
    pub recent_views: VecDeque<Touch>,
    /// Newest first, at most [`RECENT`].
    #[serde(default)]
    pub basket_adds: VecDeque<Touch>,
    /// Newest first, at most [`PURCHASES`].
    #[serde(default)]
    pub purchases: VecDeque<Touch>,
    #[serde(default)]
    pub views: u64,
    #[serde(default)]
    pub adds: u64,
    #[serde(default)]
    pub orders: u64,
    #[serde(default)]
    pub version: u64,
    /// The subject's behaviour and purchase events applied last (see [`Seen`]).
    #[serde(default, skip_serializing_if = "Seen::is_empty")]
    pub seen: Seen,
}

/// A profile as stored: its version as an attribute of its own (writes are
/// conditional on it), and everything else in one binary attribute `p`,
/// postcard-encoded: a few bytes of framing per touch instead of a map of
/// typed attributes, which is what makes a profile cheap to write once per
/// batch.
#[derive(Serialize)]
struct BodyRef<'a> {
    recent_views: &'a VecDeque<Touch>,
    basket_adds: &'a VecDeque<Touch>,
    purchases: &'a VecDeque<Touch>,
    views: u64,
    adds: u64,
    orders: u64,
    seen: Vec<u8>,
}

#[derive(Deserialize)]
struct Body {
    recent_views: VecDeque<Touch>,
    basket_adds: VecDeque<Touch>,
    purchases: VecDeque<Touch>,
    views: u64,
    adds: u64,
    orders: u64,
    seen: Vec<u8>,
}

/// The attribute a profile's body is stored in.
const BODY: &str = "p";

impl Profile {
    /// The item this profile is stored as, under `key`.
    pub fn to_item(&self, key: &Key) -> storage::StoreResult<storage::Item> {
        // Sized for the touches (a product id and a time each) up front.
        let touches = self.recent_views.len() + self.basket_adds.len() + self.purchases.len();
        let body = postcard::to_extend(
            &BodyRef {
                recent_views: &self.recent_views,
                basket_adds: &self.basket_adds,
                purchases: &self.purchases,
                views: self.views,
                adds: self.adds,
                orders: self.orders,
                seen: self.seen.to_bytes(),
            },
            Vec::with_capacity(64 + 48 * touches + 12 * self.seen.len()),
        )
        .map_err(|e| storage::StoreError::Invalid(format!("cannot encode a profile: {e}")))?;
        let mut item = key.to_item();
        item.insert(
            "version".into(),
            storage::Value::N(self.version.to_string()),
        );
        item.insert(BODY.into(), storage::Value::B(body));
        Ok(item)
    }

    /// A profile read back from its item (also one stored attribute by
    /// attribute, as versions before the binary body wrote them).
    pub fn from_item(mut item: storage::Item) -> storage::StoreResult<Self> {
        let Some(storage::Value::B(body)) = item.remove(BODY) else {
            return storage::from_item(item);
        };
        let version = match item.get("version") {
            Some(storage::Value::N(n)) => n
                .parse()
                .map_err(|_| storage::StoreError::Corrupt(format!("profile version {n}")))?,
            _ => 0,
        };
        let b: Body = postcard::from_bytes(&body)
            .map_err(|e| storage::StoreError::Corrupt(format!("a profile's body: {e}")))?;
        Ok(Self {
            recent_views: b.recent_views,
            basket_adds: b.basket_adds,
            purchases: b.purchases,
            views: b.views,
            adds: b.adds,
            orders: b.orders,
            version,
            seen: Seen::from_bytes(&b.seen),
        })
    }
}

pub fn profile_key(subject: &str) -> Key {
    Key::new(format!("subject#{subject}"), "profile")
}

fn push_bounded(list: &mut VecDeque<Touch>, t: Touch, max: usize) {
    list.push_front(t);
    list.truncate(max);
}

impl Profile {
    pub fn viewed(&mut self, product_id: String, at: i64) {
        self.views += 1;
        push_bounded(&mut self.recent_views, Touch { product_id, at }, RECENT);
    }

    pub fn added(&mut self, product_id: String, at: i64) {
        self.adds += 1;
        push_bounded(&mut self.basket_adds, Touch { product_id, at }, RECENT);
    }

    pub fn bought(&mut self, product_ids: impl Iterator<Item = String>, at: i64) {
        self.orders += 1;
        for product_id in product_ids {
            push_bounded(&mut self.purchases, Touch { product_id, at }, PURCHASES);
        }
    }
}

/// How many event ids an item remembers: the last this many events applied
/// to it (the effectively-once window, with [`SEEN_WINDOW_MINUTES`]).
pub const SEEN_PER_ITEM: usize = 64;
/// How long an item remembers an event id, in minutes (24 h).
pub const SEEN_WINDOW_MINUTES: u32 = 24 * 60;

/// The ids of the last events applied to an item, kept inside the item the
/// event is keyed on (a product's stock, a subject's profile) and written in
/// the same fenced transaction as the event's effects: an event whose id is
/// here is a producer's re-send and is applied no more. At most
/// [`SEEN_PER_ITEM`] ids no older than [`SEEN_WINDOW_MINUTES`] (by this
/// service's clock when applied); each is 12 bytes (a 64-bit digest of the
/// id and the minute it was applied), stored as one binary attribute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen(Vec<(u64, u32)>);

impl Seen {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn digest(id: &uuid::Uuid) -> u64 {
        let (hi, lo) = id.as_u64_pair();
        hi ^ lo.rotate_left(29)
    }

    pub fn contains(&self, id: &uuid::Uuid) -> bool {
        let d = Self::digest(id);
        self.0.iter().any(|(x, _)| *x == d)
    }

    /// Records `id` as applied at `now_ms` and returns true, or returns
    /// false if it was applied before (a duplicate).
    pub fn first_time(&mut self, id: &uuid::Uuid, now_ms: i64) -> bool {
        if self.contains(id) {
            return false;
        }
        let minute = (now_ms.max(0) / 60_000) as u32;
        let oldest = minute.saturating_sub(SEEN_WINDOW_MINUTES);
        self.0.retain(|(_, at)| *at >= oldest);
        if self.0.len() >= SEEN_PER_ITEM {
            self.0.drain(..=self.0.len() - SEEN_PER_ITEM);
        }
        self.0.push((Self::digest(id), minute));
        true
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 12);
        for (d, m) in &self.0 {
            out.extend_from_slice(&d.to_be_bytes());
            out.extend_from_slice(&m.to_be_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Self {
        Self(
            b.chunks_exact(12)
                .map(|c| {
                    let mut d = [0; 8];
                    d.copy_from_slice(&c[..8]);
                    let mut m = [0; 4];
                    m.copy_from_slice(&c[8..]);
                    (u64::from_be_bytes(d), u32::from_be_bytes(m))
                })
                .collect(),
        )
    }
}

impl Serialize for Seen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Seen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the bytes of a seen-id list")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Seen, E> {
                Ok(Seen::from_bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Seen, A::Error> {
                let mut b = Vec::new();
                while let Some(x) = a.next_element::<u8>()? {
                    b.push(x);
                }
                Ok(Seen::from_bytes(&b))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// The seen ids of an event that touches no stock or profile (a purchase
/// with no user or session): a small item of its own, keyed by the event's
/// partition key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    #[serde(default)]
    pub seen: Seen,
    #[serde(default)]
    pub version: u64,
}

pub fn mark_key(partition_key: &str) -> Key {
    Key::new(format!("seen#{partition_key}"), "seen")
}

/// A record that was not a valid event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    pub detail: String,
    /// Where it came from: stream, shard or partition, position.
    pub stream: String,
    pub shard: String,
    pub position: String,
    /// Milliseconds since the Unix epoch, when it was dead-lettered.
    pub at: i64,
    /// The record's bytes, whole when it was at most
    /// [`domain::event::MAX_EVENT_BYTES`] (so it can be replayed), else its
    /// first [`DEAD_LETTER_PREFIX_BYTES`]: a dead letter always fits in the
    /// store.
    #[serde(with = "serde_bytes_b64")]
    pub raw: Vec<u8>,
    /// The record's length in bytes (more than `raw`'s when it was cut).
    #[serde(default)]
    pub raw_len: u64,
    /// SHA-256 of the whole record, in hex: finds the original where it was
    /// cut.
    #[serde(default)]
    pub raw_sha256: String,
}

/// How much of an oversized record a dead letter keeps.
pub const DEAD_LETTER_PREFIX_BYTES: usize = 4 * 1024;
/// The longest reason detail a dead letter keeps.
pub const DEAD_LETTER_DETAIL_BYTES: usize = 1024;

impl DeadLetter {
    /// A dead letter of `raw`, bounded: the whole record if it is at most
    /// the event limit, else a prefix; the detail cut to a bounded length.
    pub fn new(
        reason: &str,
        detail: &str,
        origin: (&str, &str, &str),
        at: i64,
        raw: &[u8],
    ) -> Self {
        use sha2::Digest;
        let (stream, shard, position) = origin;
        let keep = if raw.len() <= domain::event::MAX_EVENT_BYTES {
            raw.len()
        } else {
            DEAD_LETTER_PREFIX_BYTES
        };
        Self {
            reason: reason.to_owned(),
            detail: cut(detail, DEAD_LETTER_DETAIL_BYTES).to_owned(),
            stream: stream.to_owned(),
            shard: shard.to_owned(),
            position: position.to_owned(),
            at,
            raw: raw[..keep].to_vec(),
            raw_len: raw.len() as u64,
            raw_sha256: hex::encode(sha2::Sha256::digest(raw)),
        }
    }

    /// Whether `raw` is the whole record, so it can be replayed.
    pub fn is_whole(&self) -> bool {
        self.raw_len == 0 || self.raw_len == self.raw.len() as u64
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Dead letters sort by time; the position makes the key unique and makes a
/// replayed batch write the same key again.
pub fn dead_letter_key(at: i64, stream: &str, shard: &str, position: &str) -> Key {
    Key::new("dead", format!("{at:013}#{stream}#{shard}#{position}"))
}

/// A low-stock alert for a supplier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub product_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    pub supplier_id: String,
    pub available: i64,
    pub threshold: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    #[serde(default)]
    pub acknowledged: bool,
}

/// Alerts of products without a supplier go to this partition.
pub const NO_SUPPLIER: &str = "-";

pub fn alert_key(supplier_id: &str, id: &str) -> Key {
    Key::new(format!("supplier#{supplier_id}"), id)
}

/// Raw bytes as standard base64, exact for any bytes and printable anywhere.
mod serde_bytes_b64 {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seen_keeps_the_last_ids_within_the_window() {
        let now = 1_796_000_000_000;
        let ids: Vec<uuid::Uuid> = (0..SEEN_PER_ITEM + 1)
            .map(|_| uuid::Uuid::now_v7())
            .collect();
        let mut seen = Seen::default();
        for id in &ids {
            assert!(seen.first_time(id, now));
        }
        assert!(!seen.first_time(&ids[SEEN_PER_ITEM], now), "a repeat");
        assert_eq!(seen.len(), SEEN_PER_ITEM);
        assert!(!seen.contains(&ids[0]), "the oldest made room");
        assert!(seen.contains(&ids[1]));
        // Round trip through the stored bytes, 12 per id.
        let bytes = seen.to_bytes();
        assert_eq!(bytes.len(), SEEN_PER_ITEM * 12);
        assert_eq!(Seen::from_bytes(&bytes), seen);
        // Past the window everything older is forgotten.
        let later = now + i64::from(SEEN_WINDOW_MINUTES + 1) * 60_000;
        let fresh = uuid::Uuid::now_v7();
        assert!(seen.first_time(&fresh, later));
        assert_eq!(seen.len(), 1);
        // Stored as a binary attribute, and read back.
        let stock = Stock {
            seen: seen.clone(),
            ..Stock::default()
        };
        let item = storage::to_item(&stock_key("p"), &stock).unwrap();
        assert!(matches!(item.get("seen"), Some(storage::Value::B(b)) if b.len() == 12));
        assert_eq!(storage::from_item::<Stock>(item).unwrap().seen, seen);
    }

    use super::*;

    #[test]
    fn minutes_and_hours_are_utc_and_sortable() {
        let t = time::macros::datetime!(2026-11-23 10:05:59 +02:00);
        assert_eq!(minute_of(t), "2026-11-23T08:05");
        assert_eq!(hour_of(t), "2026-11-23T08");
    }

    #[test]
    fn profiles_keep_the_newest_first_and_stay_bounded() {
        let mut p = Profile::default();
        for i in 0..(RECENT + 5) {
            p.viewed(format!("p{i}"), i as i64);
        }
        assert_eq!(p.recent_views.len(), RECENT);
        assert_eq!(p.recent_views[0].product_id, format!("p{}", RECENT + 4));
        assert_eq!(p.views, (RECENT + 5) as u64);
    }
}

/// What an interaction in the log was.
pub mod interaction {
    pub const VIEW: u8 = 0;
    pub const BASKET_ADD: u8 = 1;
    pub const PURCHASE: u8 = 2;
}

/// One behaviour event in the recommender's training log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// The subject's key (`user:{id}` or `session:{id}`).
    #[serde(rename = "s")]
    pub subject: String,
    #[serde(rename = "p")]
    pub product_id: String,
    /// One of [`interaction`]'s kinds.
    #[serde(rename = "k")]
    pub kind: u8,
    /// Milliseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub at: i64,
}

/// A chunk of the training log: the behaviour events of one batch in one
/// hour, in batch order. Written with the batch's effects (exactly once), so
/// the recommender trains on what the processors applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionChunk {
    pub rows: Vec<Interaction>,
}

/// The attribute a chunk's rows are stored in.
const ROWS: &str = "r";

impl InteractionChunk {
    /// The item this chunk is stored as, under `key`: its rows in one
    /// binary attribute `r`, postcard-encoded (a map of typed attributes
    /// per row cost more to build, store and read than the rows).
    pub fn to_item(&self, key: &Key) -> storage::StoreResult<storage::Item> {
        let rows = postcard::to_allocvec(&self.rows).map_err(|e| {
            storage::StoreError::Invalid(format!("cannot encode interactions: {e}"))
        })?;
        let mut item = key.to_item();
        item.insert(ROWS.into(), storage::Value::B(rows));
        Ok(item)
    }

    /// A chunk read back from its item (also one stored as a list of typed
    /// rows, as versions before the binary rows wrote them).
    pub fn from_item(mut item: storage::Item) -> storage::StoreResult<Self> {
        match item.remove(ROWS) {
            Some(storage::Value::B(rows)) => Ok(Self {
                rows: postcard::from_bytes(&rows).map_err(|e| {
                    storage::StoreError::Corrupt(format!("a chunk of interactions: {e}"))
                })?,
            }),
            _ => storage::from_item(item),
        }
    }
}

/// Interactions per chunk item (~100 bytes each: well under an item's size
/// limit on any backend).
pub const INTERACTIONS_PER_CHUNK: usize = 500;

/// The training log's partition for an hour (`YYYY-MM-DDTHH`).
pub fn interactions_pk(hour: &str) -> String {
    format!("interactions#{hour}")
}

/// A chunk's key: the hour, then the first event's time and id, so the same
/// batch folded again writes the same items.
pub fn interactions_key(hour: &str, first_at: i64, first_id: &str, chunk: usize) -> Key {
    Key::new(
        interactions_pk(hour),
        format!("{first_at:013}#{first_id}#{chunk:04}"),
    )
}

/// Recommendation attribution per model version (`reco` / `{version}`) and
/// per version and source (`reco` / `{version}#{source}`): `responses` and
/// `impressions` (counted by the API when it answers), `clicks`,
/// `basket_adds` and `purchases` (counted by the pipeline from events that
/// carry a `recommendation_id`).
pub fn reco_key(version: &str, source: Option<&str>) -> Key {
    match source {
        Some(s) => Key::new("reco", format!("{version}#{s}")),
        None => Key::new("reco", version),
    }
}

/// What a recommendation id names: the model version and, for an item's id,
/// the source that proposed the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoRef<'a> {
    pub version: &'a str,
    pub source: Option<&'a str>,
}

/// Parses a recommendation id. A response's id is `{version}~{uuid}`, an
/// item's `{version}~{uuid}~{source}`; the version is `popularity` when no
/// model answered. Anything else (ids from elsewhere) names none.
pub fn reco_ref(id: &str) -> Option<RecoRef<'_>> {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 40
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = id.split('~');
    let version = parts.next().filter(|v| token(v))?;
    parts.next().filter(|u| !u.is_empty())?;
    let source = match parts.next() {
        Some(s) if token(s) => Some(s),
        Some(_) => return None,
        None => None,
    };
    parts
        .next()
        .is_none()
        .then_some(RecoRef { version, source })
}

#[cfg(test)]
mod reco_tests {
    use super::*;

    #[test]
    fn recommendation_ids_name_version_and_source() {
        assert_eq!(
            reco_ref("v20261201-1~0193~sequence"),
            Some(RecoRef {
                version: "v20261201-1",
                source: Some("sequence")
            })
        );
        assert_eq!(
            reco_ref("popularity~abc"),
            Some(RecoRef {
                version: "popularity",
                source: None
            })
        );
        for bad in ["", "abc", "~abc", "v~", "v#1~abc", "v~a~b~c", "v~a~s#x"] {
            assert_eq!(reco_ref(bad), None, "{bad}");
        }
        assert_eq!(reco_key("v1", Some("sequence")).sk, "v1#sequence");
        assert_eq!(reco_key("v1", None).sk, "v1");
    }
}
