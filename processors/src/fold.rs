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
    ALL, Counters, DeadLetter, INTERACTIONS_PER_CHUNK, Interaction, InteractionChunk, Profile,
    Stock, dead_letter_key, interaction, interactions_key, minute_key, profile_key, reco_key,
    reco_ref, stock_key, trend_hour_key, trend_minute_key,
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
}

/// Items as they were read; `None` where the item does not exist.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub stock: HashMap<String, Option<Stock>>,
    pub profiles: HashMap<String, Option<Profile>>,
}

/// What a batch does.
#[derive(Clone, Debug, Default)]
pub struct Folded {
    pub ops: Vec<TxOp>,
    /// Products whose stock changed.
    pub products: BTreeSet<String>,
    /// Behaviour profiles that changed.
    pub subjects: BTreeSet<String>,
    /// Shop-wide counters added, per minute.
    pub ticks: BTreeMap<String, Counters>,
    /// Events applied, per type.
    pub applied: BTreeMap<&'static str, u64>,
    /// Records dead-lettered, per reason.
    pub dead: BTreeMap<&'static str, u64>,
    /// Counts ignored because a newer one was applied before.
    pub stale_counts: u64,
    /// Attributed (clicks, basket adds, purchases) added, per model version.
    pub recommendations: BTreeMap<String, [i64; 3]>,
}

/// What must be read before folding these records.
pub fn needs(records: &[Decoded]) -> Needs {
    let mut needs = Needs::default();
    for e in records.iter().filter_map(|r| r.outcome.as_ref().ok()) {
        match &e.payload {
            EventPayload::StockCounted { product_id, .. } => {
                needs.products.insert(product_id.to_string());
            }
            EventPayload::PurchaseCompleted {
                lines,
                actor,
                stock_settled,
                ..
            } => {
                if !stock_settled {
                    needs
                        .products
                        .extend(lines.iter().map(|l| l.product_id.to_string()));
                }
                if let Some(s) = actor.subject() {
                    needs.subjects.insert(s.key());
                }
            }
            EventPayload::BrowseViewed { actor, .. } | EventPayload::BasketAdded { actor, .. } => {
                if let Some(s) = actor.subject() {
                    needs.subjects.insert(s.key());
                }
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

    fn into_op(self, product_id: &str) -> TxOp {
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
        let cond = match self.read {
            None => None,
            Some(None) => Some(Cond::NotExists),
            Some(Some(s)) => Some(Cond::eq("version", s.version)),
        };
        TxOp::Update {
            table: Table::Inventory,
            key: stock_key(product_id),
            updates,
            cond,
        }
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

fn profile_of<'m>(
    profiles: &'m mut BTreeMap<String, (Option<Profile>, Profile)>,
    snapshot: &Snapshot,
    key: String,
) -> &'m mut Profile {
    let entry = profiles.entry(key).or_insert_with_key(|k| {
        let read = snapshot.profiles.get(k).cloned().flatten();
        let current = read.clone().unwrap_or_default();
        (read, current)
    });
    &mut entry.1
}

/// Counters per (product, minute), shop-wide per minute, and per trending
/// bucket. Minutes are counted from the Unix epoch and named only when the
/// operations are built, once per bucket rather than once per event.
#[derive(Default)]
struct Counts {
    minutes: BTreeMap<(ProductId, i64), Counters>,
    shop: BTreeMap<i64, Counters>,
    trend_h: BTreeMap<(i64, ProductId), Counters>,
}

impl Counts {
    fn product(&mut self, product: ProductId, minute: i64, c: &Counters) {
        self.minutes.entry((product, minute)).or_default().add(c);
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

/// Folds the records into operations, given the items [`needs`] asked for.
pub fn fold(records: &[Decoded], snapshot: &Snapshot, origin: &Origin<'_>) -> Folded {
    let mut out = Folded::default();
    let mut stock: BTreeMap<ProductId, StockChange> = BTreeMap::new();
    let mut profiles: BTreeMap<String, (Option<Profile>, Profile)> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut dead_ops = Vec::new();

    // The recommender's training log: per hour, with the event id of the
    // hour's first row.
    let mut log: BTreeMap<String, (String, Vec<Interaction>)> = BTreeMap::new();
    let mut logged = |e: &Event, subject: String, product: String, kind: u8, at: i64| {
        let hour = minute_name(e.occurred_at.unix_timestamp().div_euclid(60))[..13].to_owned();
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

    for record in records {
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
        *out.applied.entry(e.payload.type_name()).or_default() += 1;
        let at = domain::clock::to_ms(e.occurred_at);
        let minute = e.occurred_at.unix_timestamp().div_euclid(60);
        match &e.payload {
            EventPayload::ProductUpserted(p) => {
                let s = stock_of(&mut stock, snapshot, p.id);
                s.set("low_stock_threshold", Some(n(p.low_stock_threshold)));
                s.set("supplier_id", p.supplier_id.clone().map(Value::S));
                s.set("name", Some(Value::S(p.name.clone())));
                s.set("deleted", Some(Value::Bool(false)));
            }
            EventPayload::ProductDeleted { product_id } => {
                stock_of(&mut stock, snapshot, *product_id).set("deleted", Some(Value::Bool(true)));
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
                    logged(e, subject.key(), product_id.to_string(), kind, at);
                    let profile = profile_of(&mut profiles, snapshot, subject.key());
                    if viewed {
                        profile.viewed(product_id.to_string(), at);
                    } else {
                        profile.added(product_id.to_string(), at);
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
                    for line in lines {
                        logged(
                            e,
                            subject.key(),
                            line.product_id.to_string(),
                            interaction::PURCHASE,
                            at,
                        );
                    }
                    profile_of(&mut profiles, snapshot, subject.key())
                        .bought(lines.iter().map(|l| l.product_id.to_string()), at);
                }
            }
            EventPayload::OrderStatusChanged { .. } => {}
        }
    }

    for (id, change) in stock {
        let id = id.to_string();
        out.ops.push(change.into_op(&id));
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
    for ((product, minute), c) in &counts.minutes {
        let (p, m) = (product.to_string(), name(*minute));
        out.ops.push(counter_op(minute_key(&p, &m), c));
        out.ops.push(counter_op(trend_minute_key(&m, &p), c));
    }
    for ((hour, product), c) in &counts.trend_h {
        let h = name(hour * 60)[..13].to_owned();
        out.ops
            .push(counter_op(trend_hour_key(&h, &product.to_string()), c));
    }
    for (subject, (read, mut profile)) in profiles {
        let cond = match &read {
            None => Cond::NotExists,
            Some(r) => Cond::eq("version", r.version),
        };
        profile.version = read.map_or(1, |r| r.version + 1);
        if let Ok(item) = to_item(&profile_key(&subject), &profile) {
            out.ops.push(TxOp::Put {
                table: Table::Behaviour,
                item,
                cond: Some(cond),
            });
        }
        out.subjects.insert(subject);
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
        let first_at = rows.first().map_or(0, |r| r.at);
        for (chunk, part) in rows.chunks(INTERACTIONS_PER_CHUNK).enumerate() {
            let item = InteractionChunk {
                rows: part.to_vec(),
            };
            if let Ok(item) = to_item(&interactions_key(&hour, first_at, &first_id, chunk), &item) {
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
