//! Stock fan-out that keeps up: one task turns the bus's stock changes into
//! shared batches, at most one per tick; each connection's [`Outbox`] keeps
//! the batches its writer has not framed yet, so a client that reads slowly
//! gets the latest value of each product in its next frame instead of
//! every stale one (or a cut-off).
//!
//! - Each change is serialized once, by the fan-out task; a frame is the
//!   concatenation of shared item bytes.
//! - A tick is `WsConfig::tick`: the first change after a quiet tick is sent
//!   at once, later ones wait for the next tick and go out together.
//! - Every other change (alerts, orders, analytics) is passed on unchanged
//!   to the connections, which queue it as before.
//! - If the fan-out task itself falls behind the bus, the changes it missed
//!   are unknown: every stock subscription's `seq` jumps by one, which tells
//!   the client to resubscribe (the protocol's rule for a gap).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use axum::extract::ws::{Message, Utf8Bytes};
use processors::{Bus, Change};
use tokio::{
    sync::{
        Notify,
        broadcast::{self, error::RecvError, error::TryRecvError},
    },
    time::Instant,
};

use super::Topic;

/// One product's stock as sent: its version and its JSON, shared by every
/// frame that carries it.
#[derive(Debug)]
pub(super) struct Item {
    pub version: u64,
    pub json: Arc<str>,
}

/// The newest value of each product changed in one tick.
pub(super) type Batch = Arc<HashMap<Arc<str>, Item>>;

/// Batches an outbox keeps before it merges them into one (a client that
/// has not read for this many ticks).
const MAX_BATCHES: usize = 32;

/// The fan-out: its task starts with the first connection.
#[derive(Debug)]
pub struct Fanout {
    tick: Duration,
    clients: Mutex<Vec<Weak<Outbox>>>,
    others: broadcast::Sender<Arc<Change>>,
    started: OnceLock<()>,
}

impl Fanout {
    pub fn new(tick: Duration) -> Self {
        Self {
            tick,
            clients: Mutex::default(),
            others: broadcast::channel(4096).0,
            started: OnceLock::new(),
        }
    }

    /// Registers a connection's outbox; the returned receiver has every
    /// change that is not a stock level.
    pub(super) fn attach(
        self: &Arc<Self>,
        bus: &Bus,
        outbox: &Arc<Outbox>,
    ) -> broadcast::Receiver<Arc<Change>> {
        self.started.get_or_init(|| {
            tokio::spawn(self.clone().run(bus.subscribe()));
        });
        let others = self.others.subscribe();
        self.clients
            .lock()
            .expect("fanout lock")
            .push(Arc::downgrade(outbox));
        others
    }

    async fn run(self: Arc<Self>, mut bus: broadcast::Receiver<Change>) {
        let mut pending = HashMap::new();
        // The newest version the task has passed on, per product: an older
        // one arriving later (from another instance's feed) is stale.
        let mut newest: HashMap<Arc<str>, u64> = HashMap::new();
        let mut gap = false;
        // The `ws.push` spans of traced changes in this tick, ended when
        // the frame is handed to the clients.
        let mut traced: Vec<tracing::Span> = Vec::new();
        let mut last = Instant::now() - self.tick;
        loop {
            let first = bus.recv().await;
            if !self.take(first, &mut pending, &mut newest, &mut gap, &mut traced) {
                return;
            }
            let due = last + self.tick;
            loop {
                let more = match bus.try_recv() {
                    Ok(c) => Ok(c),
                    Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    Err(TryRecvError::Empty) if Instant::now() >= due => break,
                    Err(TryRecvError::Empty) => tokio::select! {
                        r = bus.recv() => r,
                        _ = tokio::time::sleep_until(due) => break,
                    },
                };
                if !self.take(more, &mut pending, &mut newest, &mut gap, &mut traced) {
                    return;
                }
            }
            if !pending.is_empty() || gap {
                let clients = self.flush(Arc::new(std::mem::take(&mut pending)), gap);
                gap = false;
                for span in traced.drain(..) {
                    span.record("clients", clients);
                }
            }
            last = Instant::now();
        }
    }

    /// Takes one change off the bus; false when the bus is closed.
    fn take(
        &self,
        received: Result<Change, RecvError>,
        pending: &mut HashMap<Arc<str>, Item>,
        newest: &mut HashMap<Arc<str>, u64>,
        gap: &mut bool,
        traced: &mut Vec<tracing::Span>,
    ) -> bool {
        match received {
            Ok(Change::StockLevel {
                product_id,
                on_hand,
                reserved,
                available,
                backorder,
                version,
                committed_at,
                traceparent,
            }) => {
                if let Some(tp) = traceparent {
                    let span = tracing::info_span!(parent: None, "ws.push", product_id = %product_id, version, clients = tracing::field::Empty);
                    processors::trace::follow(&span, &tp);
                    traced.push(span);
                }
                let id: Arc<str> = product_id.as_str().into();
                let known = newest.entry(id.clone()).or_default();
                if *known >= version && version > 0 {
                    metrics::counter!("shopstream_ws_stale_skipped_total").increment(1);
                    return true;
                }
                *known = version;
                let mut v = super::stock_json(&product_id, on_hand, reserved, available, backorder);
                v["version"] = version.into();
                v["committed_at"] = committed_at.into();
                let json: Arc<str> = v.to_string().into();
                pending.insert(id, Item { version, json });
            }
            Ok(other) => {
                // No subscriber is not an error.
                let _ = self.others.send(Arc::new(other));
            }
            Err(RecvError::Lagged(n)) => {
                metrics::counter!("shopstream_ws_fanout_lagged_total").increment(n);
                tracing::warn!(missed = n, "the websocket fan-out fell behind the bus");
                *gap = true;
            }
            Err(RecvError::Closed) => return false,
        }
        true
    }

    /// Hands the frame to every client; returns how many took it.
    fn flush(&self, batch: Batch, gap: bool) -> usize {
        let mut clients = self.clients.lock().expect("fanout lock");
        clients.retain(|w| match w.upgrade() {
            Some(outbox) => {
                outbox.push(&batch, gap);
                true
            }
            None => false,
        });
        clients.len()
    }
}

/// What a connection's writer sends next.
pub(super) enum Work {
    Nothing,
    Send(Vec<Message>),
}

/// A connection's messages waiting for its socket: a bounded queue of
/// messages sent as they are, and the stock batches not framed yet.
#[derive(Debug)]
pub(super) struct Outbox {
    pending: Mutex<Pending>,
    wake: Notify,
    capacity: usize,
}

/// The queue is full: the client is too slow for messages that cannot be
/// merged.
#[derive(Debug)]
pub(super) struct Full;

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::default(),
            wake: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("outbox lock")
    }

    /// Queues a message; a full queue is an error.
    pub fn send(&self, m: Message) -> Result<(), Full> {
        let mut p = self.lock();
        if p.queue.len() >= self.capacity {
            return Err(Full);
        }
        p.queue.push_back(m);
        drop(p);
        self.wake.notify_one();
        Ok(())
    }

    fn push(&self, batch: &Batch, gap: bool) {
        let mut p = self.lock();
        if !(p.wants(batch) || (gap && p.has_stock())) {
            return;
        }
        p.batches.push(batch.clone());
        p.gap |= gap;
        if p.batches.len() > MAX_BATCHES {
            p.compact();
        }
        drop(p);
        self.wake.notify_one();
    }

    /// Waits until there may be something to send.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// What to send now: the queue first (snapshots before the changes
    /// that follow them), then one frame per stock subscription.
    pub fn take(&self) -> Work {
        let mut p = self.lock();
        let mut out: Vec<Message> = p.queue.drain(..).collect();
        if p.subscribing == 0 {
            out.extend(
                p.frames()
                    .into_iter()
                    .map(|f| Message::Text(Utf8Bytes::from(f))),
            );
        }
        if out.is_empty() {
            Work::Nothing
        } else {
            Work::Send(out)
        }
    }
}

/// An outbox's state, under its lock.
#[derive(Debug, Default)]
pub(super) struct Pending {
    queue: VecDeque<Message>,
    batches: Vec<Batch>,
    /// Subscriptions and the last `seq` each was sent.
    pub subs: BTreeMap<Topic, u64>,
    /// Versions this client's snapshots showed, per product: a change that
    /// is not newer is dropped. Emptied as newer values are sent.
    seen: HashMap<Arc<str>, u64>,
    /// Snapshots being read: batches wait until they are queued, so no
    /// change between the read and the subscription is lost.
    pub subscribing: usize,
    gap: bool,
}

impl Pending {
    /// A snapshot showed `product_id` at `version`.
    pub fn saw(&mut self, product_id: &str, version: u64) {
        let v = self.seen.entry(product_id.into()).or_default();
        *v = (*v).max(version);
    }

    fn has_stock(&self) -> bool {
        self.subscribing > 0 || self.subs.keys().any(|t| matches!(t, Topic::Stock(_)))
    }

    fn wants_product(&self, id: &str) -> bool {
        self.subs.keys().any(|t| match t {
            Topic::Stock(None) => true,
            Topic::Stock(Some(p)) => p == id,
            _ => false,
        })
    }

    /// Whether a batch has anything for this client (any batch, while a
    /// snapshot is being read).
    fn wants(&self, batch: &Batch) -> bool {
        if self.subscribing > 0 || self.subs.contains_key(&Topic::Stock(None)) {
            return true;
        }
        self.subs.keys().any(|t| match t {
            Topic::Stock(Some(p)) => batch.contains_key(p.as_str()),
            _ => false,
        })
    }

    /// Merges the batches into one, keeping each product's newest value.
    fn compact(&mut self) {
        let mut merged: HashMap<Arc<str>, Item> = HashMap::new();
        for b in self.batches.drain(..).rev() {
            for (id, item) in b.iter() {
                merged.entry(id.clone()).or_insert_with(|| Item {
                    version: item.version,
                    json: item.json.clone(),
                });
            }
        }
        self.batches.push(Arc::new(merged));
    }

    /// One frame per stock subscription with the newest value of each of
    /// its products changed since the last frame; `seq` grows by one per
    /// frame (by two after a gap, which the client sees as a jump).
    fn frames(&mut self) -> Vec<String> {
        let batches = std::mem::take(&mut self.batches);
        let gap = std::mem::take(&mut self.gap);
        let mut taken = HashSet::new();
        let mut fresh: Vec<(&str, &Item)> = Vec::new();
        for b in batches.iter().rev() {
            for (id, item) in b.iter() {
                if !self.wants_product(id) || (batches.len() > 1 && !taken.insert(id.clone())) {
                    continue;
                }
                match self.seen.get(id) {
                    Some(v) if *v >= item.version => continue,
                    Some(_) => {
                        self.seen.remove(id);
                    }
                    None => {}
                }
                fresh.push((id, item));
            }
        }
        let mut frames = Vec::new();
        for (topic, seq) in self.subs.iter_mut() {
            let Topic::Stock(which) = topic else { continue };
            let data = match which {
                None if fresh.is_empty() && !gap => continue,
                None => {
                    let items: Vec<&str> = fresh.iter().map(|(_, i)| &*i.json).collect();
                    format!("[{}]", items.join(","))
                }
                Some(p) => match fresh.iter().find(|(id, _)| id == p) {
                    Some((_, i)) => i.json.to_string(),
                    None if gap => "null".to_owned(),
                    None => continue,
                },
            };
            *seq += 1 + u64::from(gap);
            let name = serde_json::to_string(&topic.name()).expect("a string");
            frames.push(format!(
                r#"{{"type":"change","topic":{name},"seq":{seq},"data":{data}}}"#
            ));
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn batch(items: &[(&str, u64)]) -> Batch {
        Arc::new(
            items
                .iter()
                .map(|(id, v)| {
                    let json = format!(r#"{{"product_id":"{id}","available":{v},"version":{v}}}"#);
                    (
                        Arc::from(*id),
                        Item {
                            version: *v,
                            json: json.into(),
                        },
                    )
                })
                .collect(),
        )
    }

    fn frames(outbox: &Outbox) -> Vec<Value> {
        match outbox.take() {
            Work::Nothing => Vec::new(),
            Work::Send(ms) => ms
                .into_iter()
                .map(|m| match m {
                    Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect(),
        }
    }

    fn levels(frame: &Value) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = frame["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["product_id"].as_str().unwrap().to_owned(),
                    i["version"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_client_that_did_not_read_gets_the_latest_of_each_product_in_one_frame() {
        let outbox = Outbox::new(8);
        outbox.lock().subs.insert(Topic::Stock(None), 0);
        // Far more ticks than the queue holds, while the writer is stuck.
        for v in 1..=100u64 {
            outbox.push(&batch(&[("a", v), ("b", v * 2)]), false);
            if v % 10 == 0 {
                outbox.push(&batch(&[("c", v)]), false);
            }
        }
        let f = frames(&outbox);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0]["seq"], 1);
        assert_eq!(
            levels(&f[0]),
            [("a".into(), 100), ("b".into(), 200), ("c".into(), 100)]
        );
        assert!(matches!(outbox.take(), Work::Nothing));
        outbox.push(&batch(&[("a", 101)]), false);
        let f = frames(&outbox);
        assert_eq!(
            (f[0]["seq"].as_u64(), levels(&f[0])),
            (Some(2), vec![("a".into(), 101)])
        );
    }

    #[test]
    fn a_change_a_snapshot_already_showed_is_dropped_and_a_newer_one_sent() {
        let outbox = Outbox::new(8);
        {
            let mut p = outbox.lock();
            p.subs.insert(Topic::Stock(None), 0);
            p.saw("a", 5);
        }
        outbox.push(&batch(&[("a", 4), ("b", 1)]), false);
        outbox.push(&batch(&[("a", 5)]), false);
        let f = frames(&outbox);
        assert_eq!(levels(&f[0]), [("b".into(), 1)]);
        outbox.push(&batch(&[("a", 6)]), false);
        assert_eq!(levels(&frames(&outbox)[0]), [("a".into(), 6)]);
        assert!(
            outbox.lock().seen.is_empty(),
            "forgotten once newer was sent"
        );
    }

    #[test]
    fn a_product_topic_gets_only_its_product_and_a_gap_shows_as_a_jump() {
        let outbox = Outbox::new(8);
        outbox.lock().subs.insert(Topic::Stock(Some("a".into())), 0);
        outbox.push(&batch(&[("b", 1)]), false);
        assert!(matches!(outbox.take(), Work::Nothing), "b is not wanted");
        outbox.push(&batch(&[("a", 3), ("b", 2)]), false);
        let f = frames(&outbox);
        assert_eq!(
            (f[0]["seq"].as_u64(), f[0]["data"]["version"].as_u64()),
            (Some(1), Some(3))
        );
        outbox.push(&batch(&[]), true);
        let f = frames(&outbox);
        assert_eq!(
            (f[0]["seq"].as_u64(), f[0]["data"].is_null()),
            (Some(3), true)
        );
    }

    #[test]
    fn batches_wait_while_a_snapshot_is_read_and_the_queue_goes_first() {
        let outbox = Outbox::new(2);
        outbox.lock().subscribing = 1;
        outbox.push(&batch(&[("a", 2)]), false);
        assert!(matches!(outbox.take(), Work::Nothing));
        {
            let mut p = outbox.lock();
            p.subscribing = 0;
            p.saw("a", 1);
            p.subs.insert(Topic::Stock(None), 0);
        }
        outbox.send(Message::Text("snapshot".into())).unwrap();
        let Work::Send(ms) = outbox.take() else {
            panic!("nothing to send")
        };
        assert_eq!(ms[0], Message::Text("snapshot".into()));
        assert_eq!(ms.len(), 2, "then the change that came while reading");
        outbox.send(Message::Text("1".into())).unwrap();
        outbox.send(Message::Text("2".into())).unwrap();
        assert!(
            outbox.send(Message::Text("3".into())).is_err(),
            "the queue is bounded"
        );
    }
}
