//! Folding a batch of decoded records into store operations. Pure: the items
//! an event's effect depends on (stock that a count or a purchase reads,
//! behaviour profiles) come in as a snapshot, and every operation that used
//! the snapshot is conditional on the item's version, so a concurrent change
//! makes the commit fail and the batch is folded again from fresh reads.
//! Effects that commute (stock adjustments, counters) are plain atomic adds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use domain::{Event, EventPayload, ProductId, Rejection};
use rust_decimal::Decimal;
use storage::{Cond, Key, Table, TxOp, Update, Value, to_item};

use crate::state::{
    ALL, Counters, DeadLetter, INTERACTIONS_PER_CHUNK, Interaction, InteractionChunk, Mark,
    Profile, Stock, dead_letter_key, interaction, interactions_key, mark_key, minute_key,
    profile_key, reco_key, reco_ref, stock_key, trend_hour_key,
};

/// One record of a batch, decoded.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The record's position in its shard (offset or sequence number).
    pub position: String,
    pub outcome: Result<Event, Rejection>,
    /// The record's bytes, kept for the dead-letter store (a valid event's
    /// too: the store may still refuse its effects).
    pub raw: Vec<u8>,
}

/// Where a batch comes from, for dead letters.
#[derive(Clone, Debug)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub shard: &'a str,
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: i64,
}

/// The items a batch's fold must read first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub products: BTreeSet<String>,
    pub subjects: BTreeSet<String>,
    /// Partition keys of events that keep their seen ids in a [`Mark`].
    pub marks: BTreeSet<String>,
}

/// Items as they were read; `None` where the item does not exist.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub stock: HashMap<String, Option<Stock>>,
    pub profiles: HashMap<String, Option<Profile>>,
    pub marks: HashMap<String, Option<Mark>>,
}

/// The item an event keeps its id in, for de-duplication: the one it is
/// keyed on and already writes.
enum Anchor {
    Stock(ProductId),
    Profile(String),
    Mark(String),
    /// Effects none, or none that a re-send could double.
    None,
}

fn anchor(e: &Event) -> Anchor {
    match &e.payload {
        EventPayload::ProductUpserted(p) => Anchor::Stock(p.id),
        EventPayload::ProductDeleted { product_id }
        | EventPayload::StockAdjusted { product_id, .. }
        | EventPayload::StockCounted { product_id, .. } => Anchor::Stock(*product_id),
        EventPayload::BrowseViewed { actor, .. }
        | EventPayload::BasketAdded { actor, .. }
        | EventPayload::PurchaseCompleted { actor, .. } => match actor.subject() {
            Some(s) => Anchor::Profile(s.key()),
            None => Anchor::Mark(e.payload.partition_key()),
        },
        EventPayload::OrderStatusChanged { .. } => Anchor::None,
    }
}

/// What a batch does.
#[derive(Clone, Debug, Default)]
pub struct Folded {
    pub ops: Vec<TxOp>,
    /// Products whose stock changed.
    pub products: BTreeSet<String>,
    /// Products created, changed or deleted in the catalogue.
    pub catalogue: BTreeSet<String>,
    /// Behaviour profiles that changed.
    pub subjects: BTreeSet<String>,
    /// Shop-wide counters added, per minute.
    pub ticks: BTreeMap<String, Counters>,
    /// Events applied, per type.
    pub applied: BTreeMap<&'static str, u64>,
    /// Records dead-lettered, per reason.
    pub dead: BTreeMap<&'static str, u64>,
    /// Events not applied because their id was applied before, per type.
    pub duplicates: BTreeMap<&'static str, u64>,
    /// Counts ignored because a newer one was applied before.
    pub stale_counts: u64,
    /// Attributed (clicks, basket adds, purchases) added, per model version.
    pub recommendations: BTreeMap<String, [i64; 3]>,
    /// The items read for this fold as they are once its operations are
    /// committed, so the caller can keep them without reading them again.
    pub after: Snapshot,
    /// Per record: whether its event was applied (neither a duplicate nor a
    /// dead letter). A batch committed in several transactions keeps this
    /// so that a replay decides every record as the first fold did.
    pub firsts: Vec<bool>,
}

/// What must be read before folding these records: the items whose
/// current state an effect depends on, and every item an event keeps its
/// id in.
pub fn needs(records: &[Decoded]) -> Needs {
    let mut needs = Needs::default();
    for e in records.iter().filter_map(|r| r.outcome.as_ref().ok()) {
        match anchor(e) {
            Anchor::Stock(id) => {
                needs.products.insert(id.to_string());
            }
            Anchor::Profile(key) => {
                needs.subjects.insert(key);
            }
            Anchor::Mark(key) => {
                needs.marks.insert(key);
            }
            Anchor::None => {}
        }
        match &e.payload {
            EventPayload::StockCounted { product_id, .. } => {
                needs.products.insert(product_id.to_string());
            }
            // A behaviour event's profile is its anchor, read above.
            EventPayload::PurchaseCompleted {
                lines,
                stock_settled: false,
                ..
            } => {
                needs
                    .products
                    .extend(lines.iter().map(|l| l.product_id.to_string()));
            }
            _ => {}
        }
    }
    needs
}

/// Accumulated change of one product's stock.
#[derive(Default)]
struct StockChange {
    /// The stock as read, if the batch needed to read it.
    read: Option<Option<Stock>>,
    /// Read stock with this batch's changes so far.
    current: Stock,
    on_hand: i64,
    backorder: i64,
    sets: BTreeMap<&'static str, Option<Value>>,
    /// Whether an event id was added to `current.seen`.
    seen_changed: bool,
}

impl StockChange {
    fn new(read: Option<Option<Stock>>) -> Self {
        let current = read.clone().flatten().unwrap_or_default();
        Self {
            read,
            current,
            ..Self::default()
        }
    }

    fn move_on_hand(&mut self, delta: i64) {
        self.on_hand += delta;
        self.current.on_hand += delta;
        self.current.available += delta;
    }

    fn set(&mut self, attr: &'static str, v: Option<Value>) {
        self.sets.insert(attr, v);
    }

    /// What a catalogue event sets, on the stock item.
    fn catalogue(&mut self, p: Option<&domain::Product>) {
        match p {
            Some(p) => {
                self.current.low_stock_threshold = Some(i64::from(p.low_stock_threshold));
                self.current.supplier_id = p.supplier_id.clone();
                self.current.name = Some(p.name.clone());
                self.current.deleted = false;
                self.set("low_stock_threshold", Some(n(p.low_stock_threshold)));
                self.set("supplier_id", p.supplier_id.clone().map(Value::S));
                self.set("name", Some(Value::S(p.name.clone())));
                self.set("deleted", Some(Value::Bool(false)));
            }
            None => {
                self.current.deleted = true;
                self.set("deleted", Some(Value::Bool(true)));
            }
        }
    }

    /// Whether this is the first time the event applies to this product.
    fn first_time(&mut self, id: &uuid::Uuid, now_ms: i64) -> bool {
        let first = self.current.seen.first_time(id, now_ms);
        self.seen_changed |= first;
        first
    }

    /// The operation, and the item as it will be once that is committed
    /// (when the item was read; an unread item's state is not known).
    fn into_op(self, product_id: &str) -> (TxOp, Option<Stock>) {
        let after = self.read.as_ref().map(|read| Stock {
            version: read.as_ref().map_or(0, |r| r.version) + 1,
            ..self.current.clone()
        });
        let mut updates = vec![Update::add("version", 1)];
        if self.on_hand != 0 {
            updates.push(Update::add("on_hand", self.on_hand));
            updates.push(Update::add("available", self.on_hand));
        }
        if self.backorder != 0 {
            updates.push(Update::add("backorder", self.backorder));
        }
        for (attr, v) in self.sets {
            updates.push(match v {
                Some(v) => Update::Set(attr.to_owned(), v),
                None => Update::Remove(attr.to_owned()),
            });
        }
        // The seen ids are written only over the list that was read (an
        // unread list is not known, so not overwritten).
        if self.seen_changed && self.read.is_some() {
            updates.push(Update::Set(
                "seen".into(),
                Value::B(self.current.seen.to_bytes()),
            ));
        }
        let cond = match self.read {
            None => None,
            Some(None) => Some(Cond::NotExists),
            Some(Some(s)) => Some(Cond::eq("version", s.version)),
        };
        let op = TxOp::Update {
            table: Table::Inventory,
            key: stock_key(product_id),
            updates,
            cond,
        };
        (op, after)
    }
}

fn n(v: impl ToString) -> Value {
    Value::N(v.to_string())
}

fn counter_op(key: Key, c: &Counters) -> TxOp {
    let mut updates = Vec::new();
    for (attr, v) in [
        ("views", c.views),
        ("basket_adds", c.basket_adds),
        ("purchases", c.purchases),
        ("units", c.units),
    ] {
        if v != 0 {
            updates.push(Update::add(attr, v));
        }
    }
    if !c.revenue.is_zero() {
        updates.push(Update::Add("revenue".into(), n(c.revenue.normalize())));
    }
    TxOp::Update {
        table: Table::Analytics,
        key,
        updates,
        cond: None,
    }
}

fn stock_of<'m>(
    stock: &'m mut BTreeMap<ProductId, StockChange>,
    snapshot: &Snapshot,
    id: ProductId,
) -> &'m mut StockChange {
    stock.entry(id).or_insert_with(|| {
        let read = if snapshot.stock.is_empty() {
            None
        } else {
            snapshot.stock.get(&id.to_string()).cloned()
        };
        StockChange::new(read)
    })
}

/// The profile of `key` as this batch has changed it so far, with the
/// version it was read at (`None`: it did not exist).
fn profile_of<'m>(
    profiles: &'m mut BTreeMap<String, (Option<u64>, Profile)>,
    snapshot: &Snapshot,
    key: String,
) -> &'m mut Profile {
    let entry = profiles.entry(key).or_insert_with_key(|k| {
        match snapshot.profiles.get(k).and_then(Option::as_ref) {
            Some(read) => (Some(read.version), read.clone()),
            None => (None, Profile::default()),
        }
    });
    &mut entry.1
}

/// Counters shop-wide per minute, and per (product, hour): a product's
/// counters are kept by the hour, in its hour's trending partition, which is
/// both what trending ranks and a product's own series. Per-minute product
/// counters were one write per event on a shop's catalogue (every
/// (product, minute) pair is new); per hour they are a fraction of one.
/// Minutes are counted from the Unix epoch and named only when the
/// operations are built, once per bucket rather than once per event.
#[derive(Default)]
struct Counts {
    shop: BTreeMap<i64, Counters>,
    trend_h: BTreeMap<(i64, ProductId), Counters>,
}

impl Counts {
    fn product(&mut self, product: ProductId, minute: i64, c: &Counters) {
        self.trend_h
            .entry((minute.div_euclid(60), product))
            .or_default()
            .add(c);
    }

    fn shop(&mut self, minute: i64, c: &Counters) {
        self.shop.entry(minute).or_default().add(c);
    }
}

/// `YYYY-MM-DDTHH:MM` (UTC) of a minute counted from the Unix epoch, as
/// [`crate::state::minute_of`] writes it.
fn minute_name(minute: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(minute * 60) {
        Ok(t) => crate::state::minute_of(t),
        Err(_) => "0000-00-00T00:00".into(),
    }
}

/// A put of a behaviour item read at version `read` (`None`: it did not
/// exist), conditional on that: a concurrent change fails the commit and
/// the batch is folded again.
fn versioned_put(item: storage::StoreResult<storage::Item>, read: Option<u64>) -> Option<TxOp> {
    let cond = match read {
        None => Cond::NotExists,
        Some(v) => Cond::eq("version", v),
    };
    item.ok().map(|item| TxOp::Put {
        table: Table::Behaviour,
        item,
        cond: Some(cond),
    })
}

/// Folds the records into operations, given the items [`needs`] asked for.
pub fn fold(records: &[Decoded], snapshot: &Snapshot, origin: &Origin<'_>) -> Folded {
    fold_decided(records, snapshot, origin, None)
}

/// [`fold`], with whether each record's event is applied decided already
/// (`decided[i]`, as an earlier fold's [`Folded::firsts`] says) instead of
/// by the seen ids of the items it is anchored on: the replay of a batch
/// whose first transactions committed, where those items may hold the
/// batch's own ids already.
pub fn fold_decided(
    records: &[Decoded],
    snapshot: &Snapshot,
    origin: &Origin<'_>,
    decided: Option<&[bool]>,
) -> Folded {
    let mut out = Folded {
        firsts: vec![false; records.len()],
        ..Folded::default()
    };
    let mut stock: BTreeMap<ProductId, StockChange> = BTreeMap::new();
    let mut profiles: BTreeMap<String, (Option<u64>, Profile)> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut dead_ops = Vec::new();

    // The recommender's training log: per hour, with the event id of the
    // hour's first row.
    // Keyed by the hour counted from the epoch; named once, at the end.
    let mut log: BTreeMap<i64, (String, Vec<Interaction>)> = BTreeMap::new();
    let mut logged = |e: &Event, subject: String, product: String, kind: u8, at: i64| {
        let hour = e.occurred_at.unix_timestamp().div_euclid(3600);
        log.entry(hour)
            .or_insert_with(|| (e.id.to_string(), Vec::new()))
            .1
            .push(Interaction {
                subject,
                product_id: product,
                kind,
                at,
            });
    };

    // Attribution: (clicks, basket adds, purchases) per model version and
    // per version and source.
    let mut reco: BTreeMap<(String, Option<String>), [i64; 3]> = BTreeMap::new();
    let mut attribute = |id: &Option<String>, k: usize| {
        if let Some(r) = id.as_deref().and_then(reco_ref) {
            reco.entry((r.version.to_owned(), None)).or_default()[k] += 1;
            if let Some(source) = r.source {
                reco.entry((r.version.to_owned(), Some(source.to_owned())))
                    .or_default()[k] += 1;
            }
        }
    };

    let mut marks: BTreeMap<String, (Option<Mark>, Mark)> = BTreeMap::new();

    for (i, record) in records.iter().enumerate() {
        let e = match &record.outcome {
            Ok(e) => e,
            Err(rejection) => {
                let key =
                    dead_letter_key(origin.now_ms, origin.stream, origin.shard, &record.position);
                let letter = DeadLetter::new(
                    rejection.reason.as_str(),
                    &rejection.detail,
                    (origin.stream, origin.shard, &record.position),
                    origin.now_ms,
                    &record.raw,
                );
                if let Ok(item) = to_item(&key, &letter) {
                    dead_ops.push(TxOp::Put {
                        table: Table::DeadLetters,
                        item,
                        cond: None,
                    });
                }
                *out.dead.entry(rejection.reason.as_str()).or_default() += 1;
                continue;
            }
        };
        let first = match anchor(e) {
            Anchor::Stock(id) => {
                stock_of(&mut stock, snapshot, id).first_time(&e.id, origin.now_ms)
            }
            Anchor::Profile(key) => profile_of(&mut profiles, snapshot, key)
                .seen
                .first_time(&e.id, origin.now_ms),
            Anchor::Mark(key) => {
                let (_, mark) = marks.entry(key).or_insert_with_key(|k| {
                    let read = snapshot.marks.get(k).cloned().flatten();
                    let current = read.clone().unwrap_or_default();
                    (read, current)
                });
                mark.seen.first_time(&e.id, origin.now_ms)
            }
            Anchor::None => true,
        };
        let first = decided.map_or(first, |d| d.get(i).copied().unwrap_or(false));
        if !first {
            *out.duplicates.entry(e.payload.type_name()).or_default() += 1;
            continue;
        }
        *out.applied.entry(e.payload.type_name()).or_default() += 1;
        out.firsts[i] = true;
        let at = domain::clock::to_ms(e.occurred_at);
        let minute = e.occurred_at.unix_timestamp().div_euclid(60);
        match &e.payload {
            EventPayload::ProductUpserted(p) => {
                stock_of(&mut stock, snapshot, p.id).catalogue(Some(p.as_ref()));
                out.catalogue.insert(p.id.to_string());
            }
            EventPayload::ProductDeleted { product_id } => {
                stock_of(&mut stock, snapshot, *product_id).catalogue(None);
                out.catalogue.insert(product_id.to_string());
            }
            EventPayload::StockAdjusted {
                product_id, delta, ..
            } => {
                stock_of(&mut stock, snapshot, *product_id).move_on_hand(*delta);
            }
            EventPayload::StockCounted {
                product_id,
                on_hand,
                sequence,
            } => {
                let s = stock_of(&mut stock, snapshot, *product_id);
                if *sequence > s.current.counted_seq {
                    let delta = on_hand - s.current.on_hand;
                    s.move_on_hand(delta);
                    s.current.counted_seq = *sequence;
                    s.set("counted_seq", Some(n(sequence)));
                } else {
                    out.stale_counts += 1;
                }
            }
            EventPayload::BrowseViewed {
                actor,
                product_id,
                recommendation_id,
            }
            | EventPayload::BasketAdded {
                actor,
                product_id,
                recommendation_id,
                ..
            } => {
                let viewed = matches!(e.payload, EventPayload::BrowseViewed { .. });
                let (step, c, kind) = if viewed {
                    let c = Counters {
                        views: 1,
                        ..Counters::default()
                    };
                    (0, c, interaction::VIEW)
                } else {
                    let c = Counters {
                        basket_adds: 1,
                        ..Counters::default()
                    };
                    (1, c, interaction::BASKET_ADD)
                };
                attribute(recommendation_id, step);
                counts.product(*product_id, minute, &c);
                counts.shop(minute, &c);
                if let Some(subject) = actor.subject() {
                    let (subject, product) = (subject.key(), product_id.to_string());
                    logged(e, subject.clone(), product.clone(), kind, at);
                    let profile = profile_of(&mut profiles, snapshot, subject);
                    if viewed {
                        profile.viewed(product, at);
                    } else {
                        profile.added(product, at);
                    }
                }
            }
            EventPayload::PurchaseCompleted {
                actor,
                lines,
                stock_settled,
                recommendation_id,
                ..
            } => {
                attribute(recommendation_id, 2);
                let mut order = Counters {
                    purchases: 1,
                    ..Counters::default()
                };
                for line in lines {
                    if !stock_settled {
                        let s = stock_of(&mut stock, snapshot, line.product_id);
                        // Never below zero: what stock cannot cover is a backorder.
                        let covered = line.quantity.min(s.current.available.max(0));
                        s.move_on_hand(-covered);
                        s.backorder += line.quantity - covered;
                        s.current.backorder += line.quantity - covered;
                    }
                    let revenue = line.unit_price.amount() * Decimal::from(line.quantity);
                    let c = Counters {
                        purchases: 1,
                        units: line.quantity,
                        revenue,
                        ..Counters::default()
                    };
                    order.units += line.quantity;
                    order.revenue += revenue;
                    counts.product(line.product_id, minute, &c);
                }
                counts.shop(minute, &order);
                if let Some(subject) = actor.subject() {
                    let subject = subject.key();
                    for line in lines {
                        logged(
                            e,
                            subject.clone(),
                            line.product_id.to_string(),
                            interaction::PURCHASE,
                            at,
                        );
                    }
                    profile_of(&mut profiles, snapshot, subject)
                        .bought(lines.iter().map(|l| l.product_id.to_string()), at);
                }
            }
            EventPayload::OrderStatusChanged { .. } => {}
        }
    }

    for (id, change) in stock {
        let id = id.to_string();
        let (op, after) = change.into_op(&id);
        out.ops.push(op);
        if let Some(after) = after {
            out.after.stock.insert(id.clone(), Some(after));
        }
        out.products.insert(id);
    }
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut name = |minute: i64| -> String {
        names
            .entry(minute)
            .or_insert_with(|| minute_name(minute))
            .clone()
    };
    for (minute, c) in &counts.shop {
        let m = name(*minute);
        out.ops.push(counter_op(minute_key(ALL, &m), c));
        out.ticks.entry(m).or_default().add(c);
    }
    for ((hour, product), c) in &counts.trend_h {
        let h = name(hour * 60)[..13].to_owned();
        out.ops
            .push(counter_op(trend_hour_key(&h, &product.to_string()), c));
    }
    for (subject, (read, mut profile)) in profiles {
        profile.version = read.map_or(1, |v| v + 1);
        out.ops
            .extend(versioned_put(profile.to_item(&profile_key(&subject)), read));
        out.after.profiles.insert(subject.clone(), Some(profile));
        out.subjects.insert(subject);
    }
    for (key, (read, mut mark)) in marks {
        let read = read.map(|r| r.version);
        mark.version = read.map_or(1, |v| v + 1);
        out.ops
            .extend(versioned_put(to_item(&mark_key(&key), &mark), read));
        out.after.marks.insert(key, Some(mark));
    }
    for ((version, source), [clicks, adds, purchases]) in reco {
        if source.is_none() {
            out.recommendations
                .insert(version.clone(), [clicks, adds, purchases]);
        }
        let updates = [
            ("clicks", clicks),
            ("basket_adds", adds),
            ("purchases", purchases),
        ]
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(a, n)| Update::add(a, n))
        .collect();
        out.ops.push(TxOp::Update {
            table: Table::Analytics,
            key: reco_key(&version, source.as_deref()),
            updates,
            cond: None,
        });
    }
    for (hour, (first_id, rows)) in log {
        let hour = name(hour * 60)[..13].to_owned();
        let first_at = rows.first().map_or(0, |r| r.at);
        for (chunk, part) in rows.chunks(INTERACTIONS_PER_CHUNK).enumerate() {
            let item = InteractionChunk {
                rows: part.to_vec(),
            };
            if let Ok(item) = item.to_item(&interactions_key(&hour, first_at, &first_id, chunk)) {
                out.ops.push(TxOp::Put {
                    table: Table::Behaviour,
                    item,
                    cond: None,
                });
            }
        }
    }
    out.ops.extend(dead_ops);
    out
}

#[cfg(test)]
mod tests {
    use domain::{Actor, Event, EventPayload, ProductId};

    use super::*;
    use crate::state::Seen;

    const NOW: i64 = 1_796_000_000_000;

    fn decoded(events: &[Event]) -> Vec<Decoded> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| Decoded {
                position: i.to_string(),
                outcome: Ok(e.clone()),
                raw: Vec::new(),
            })
            .collect()
    }

    fn origin() -> Origin<'static> {
        Origin {
            stream: "log",
            shard: "0",
            now_ms: NOW,
        }
    }

    fn snapshot_for(records: &[Decoded], stock: Option<Stock>) -> Snapshot {
        let needs = needs(records);
        Snapshot {
            stock: needs
                .products
                .into_iter()
                .map(|p| (p, stock.clone()))
                .collect(),
            profiles: needs.subjects.into_iter().map(|s| (s, None)).collect(),
            marks: needs.marks.into_iter().map(|m| (m, None)).collect(),
        }
    }

    fn on_hand_added(folded: &Folded) -> i64 {
        folded
            .ops
            .iter()
            .filter_map(|op| match op {
                TxOp::Update {
                    table: Table::Inventory,
                    updates,
                    ..
                } => Some(updates),
                _ => None,
            })
            .flatten()
            .filter_map(|u| match u {
                Update::Add(a, Value::N(n)) if a == "on_hand" => n.parse::<i64>().ok(),
                _ => None,
            })
            .sum()
    }

    #[test]
    fn the_same_id_twice_in_a_batch_applies_once() {
        let p = ProductId::new();
        let adjust = Event::new(
            "test",
            EventPayload::StockAdjusted {
                product_id: p,
                delta: 5,
                reason: "received".into(),
            },
        );
        let view = Event::new(
            "test",
            EventPayload::BrowseViewed {
                actor: Actor {
                    session_id: Some("s1".into()),
                    user_id: None,
                },
                product_id: p,
                recommendation_id: None,
            },
        );
        let records = decoded(&[adjust.clone(), view.clone(), adjust.clone(), view, adjust]);
        let folded = fold(&records, &snapshot_for(&records, None), &origin());
        assert_eq!(on_hand_added(&folded), 5);
        assert_eq!(folded.applied.values().sum::<u64>(), 2);
        assert_eq!(folded.duplicates["stock.adjusted"], 2);
        assert_eq!(folded.duplicates["browse.viewed"], 1);
        assert_eq!(folded.ticks.values().map(|c| c.views).sum::<i64>(), 1);
        // The ids are written with the stock, conditional on what was read.
        let stock_op = folded
            .ops
            .iter()
            .find(|op| {
                matches!(
                    op,
                    TxOp::Update {
                        table: Table::Inventory,
                        ..
                    }
                )
            })
            .unwrap();
        let TxOp::Update { updates, cond, .. } = stock_op else {
            unreachable!()
        };
        assert_eq!(cond, &Some(Cond::NotExists));
        let seen = updates
            .iter()
            .find_map(|u| match u {
                Update::Set(a, Value::B(b)) if a == "seen" => Some(Seen::from_bytes(b)),
                _ => None,
            })
            .expect("seen ids written");
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn an_id_the_item_remembers_is_not_applied_again() {
        let p = ProductId::new();
        let adjust = Event::new(
            "test",
            EventPayload::StockAdjusted {
                product_id: p,
                delta: 5,
                reason: "received".into(),
            },
        );
        let mut seen = Seen::default();
        assert!(seen.first_time(&adjust.id, NOW - 60_000));
        let stored = Stock {
            on_hand: 5,
            version: 3,
            seen,
            ..Stock::default()
        };
        let records = decoded(&[adjust]);
        let folded = fold(&records, &snapshot_for(&records, Some(stored)), &origin());
        assert_eq!(on_hand_added(&folded), 0);
        assert!(folded.applied.is_empty());
        assert_eq!(folded.duplicates["stock.adjusted"], 1);
    }

    #[test]
    fn a_purchase_with_no_subject_keeps_its_id_in_a_mark() {
        let p = ProductId::new();
        let purchase = Event::new(
            "till",
            EventPayload::PurchaseCompleted {
                order_id: "till-1".into(),
                actor: Actor::default(),
                lines: vec![domain::event::PurchaseLine {
                    product_id: p,
                    quantity: 2,
                    unit_price: domain::Price::parse("3.00").unwrap(),
                }],
                total: domain::Price::parse("6.00").unwrap(),
                currency: domain::Currency::parse("EUR").unwrap(),
                recommendation_id: None,
                stock_settled: false,
            },
        );
        let records = decoded(&[purchase.clone(), purchase]);
        let snapshot = snapshot_for(
            &records,
            Some(Stock {
                on_hand: 10,
                available: 10,
                version: 1,
                ..Stock::default()
            }),
        );
        assert!(snapshot.marks.contains_key("till-1"));
        let folded = fold(&records, &snapshot, &origin());
        assert_eq!(on_hand_added(&folded), -2);
        assert_eq!(folded.duplicates["purchase.completed"], 1);
        assert!(folded.ops.iter().any(|op| matches!(op,
            TxOp::Put { table: Table::Behaviour, item, .. } if Key::of(item).unwrap() == mark_key("till-1"))));
    }
}
