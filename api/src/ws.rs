//! The websocket hub: `GET /ws`.
//!
//! # Protocol
//! The client authenticates with a first message `{"op":"auth","token":"…"}`
//! (never in the URL, where proxies and logs would keep it; `?token=` is
//! refused); anonymous clients may use public topics.
//! Then it sends `{"op":"subscribe","topic":"…"}` and
//! `{"op":"unsubscribe","topic":"…"}`. Topics:
//! - `stock` (every product) and `stock:{product_id}`: public;
//! - `analytics`: admin;
//! - `alerts`: the supplier role, its own products (an admin: every
//!   supplier), as in REST;
//! - `orders`: a customer's own orders (an admin: every order).
//!
//! Each subscription starts with `{"type":"snapshot","topic","seq":0,"data"}`
//! and goes on with `{"type":"change","topic","seq":n,"data"}`, `seq` growing
//! by one per message of that subscription, so a client that sees a jump
//! knows it missed something and resubscribes. Changes come from the
//! processors' bus after commit: a client only sees committed state.
//!
//! Stock is coalesced (see [`fanout`]): a `stock` change's `data` is a list
//! with the newest level of each product changed since the previous frame
//! (at most one frame per `tick`), a `stock:{id}` change's `data` that
//! product's newest level; each level carries its `version` (newer is
//! larger) and `committed_at` (Unix milliseconds). A client that reads
//! slowly skips stale levels; it is never cut off for stock.
//!
//! # Limits
//! - A bounded queue per connection for what cannot be merged (snapshots,
//!   alerts, orders, analytics, answers): a client too slow to take those is
//!   closed with code 1013 ("try again later") and a reason, and nobody else
//!   waits for it.
//! - At most `ws_max_connections_per_user` connections per user,
//!   `limit_ws_anonymous_per_address` anonymous ones per client address
//!   (`429` over it), `ws_max_subscriptions` subscriptions per connection,
//!   and `limit_ws_snapshots_per_minute` subscriptions (each answered with a
//!   snapshot read) per connection per minute (over it: an error message
//!   with `retry_after` seconds).
//! - A browser `Origin` other than the server's own host (or a configured
//!   one) is refused with 403.
//! - The server pings every `ws_ping_interval`; a client silent for three
//!   intervals is closed.
//! - A malformed message is answered with `{"type":"error","message"}`; the
//!   connection stays open.

mod fanout;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{
        RawQuery, State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, header},
    response::Response,
    routing::get,
};
use domain::Role;
use futures::{SinkExt, StreamExt};
use processors::Change;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast::error::RecvError, oneshot};

pub use self::fanout::Fanout;
use self::fanout::{Outbox, Work};

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    limits::{ClientIp, Limits, WsSlot},
};

/// Limits of the hub.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Origins allowed besides the server's own host, e.g. `https://shop.example`.
    pub allowed_origins: Vec<String>,
    pub max_connections_per_user: usize,
    pub max_subscriptions: usize,
    /// Messages a connection may have waiting before it is cut off (at
    /// least 1: the settings refuse 0).
    pub queue: usize,
    pub ping_interval: Duration,
    /// At most one stock frame per connection per tick.
    pub tick: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_connections_per_user: 5,
            max_subscriptions: 20,
            queue: 256,
            ping_interval: Duration::from_secs(20),
            tick: Duration::from_millis(20),
        }
    }
}

/// Open connections per user, and the stock fan-out.
#[derive(Debug)]
pub struct Hub {
    per_user: Mutex<HashMap<String, usize>>,
    fanout: Arc<Fanout>,
    /// Turns true when the server stops: every connection closes with 1001.
    closing: tokio::sync::watch::Sender<bool>,
    /// How many connections are open (each holds an [`Open`]).
    open: tokio::sync::watch::Sender<usize>,
}

/// Counts one open connection until dropped.
struct Open(Arc<Hub>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// Holds one of a user's connection slots until dropped.
#[derive(Debug)]
struct Slot {
    hub: Arc<Hub>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.hub.per_user.lock().expect("hub lock");
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
        metrics::gauge!("shopstream_ws_connections").decrement(1.0);
    }
}

impl Hub {
    pub fn new(tick: Duration) -> Self {
        Self {
            per_user: Mutex::default(),
            fanout: Arc::new(Fanout::new(tick)),
            closing: tokio::sync::watch::Sender::new(false),
            open: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Closes every websocket with 1001 (going away) and refuses new ones;
    /// returns when all are closed, or after `within`. Returns how many
    /// were still open then.
    pub async fn close_all(&self, within: Duration) -> usize {
        self.closing.send_replace(true);
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(within, open.wait_for(|n| *n == 0)).await;
        let left = *self.open.borrow();
        if left > 0 {
            tracing::warn!(left, "websockets still open after the close; dropped");
        }
        left
    }

    fn opened(self: &Arc<Self>) -> Open {
        self.open.send_modify(|n| *n += 1);
        Open(self.clone())
    }

    fn admit(self: &Arc<Self>, user: &str, max: usize) -> Option<Slot> {
        let mut m = self.per_user.lock().expect("hub lock");
        let n = m.entry(user.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        metrics::gauge!("shopstream_ws_connections").increment(1.0);
        Some(Slot {
            hub: self.clone(),
            user: user.to_owned(),
        })
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Not a browser: origins are a browser's protection.
        return true;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Opens a websocket (see the module docs for the protocol).
pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let config = state.config.ws.clone();
    if *state.hub.closing.borrow() {
        return Err(ApiError::Unavailable(
            "the server is shutting down; connect again".into(),
        ));
    }
    if !origin_allowed(&headers, &config.allowed_origins) {
        metrics::counter!("shopstream_ws_refused_total", "why" => "origin").increment(1);
        return Err(ApiError::Forbidden("same-origin"));
    }
    let in_url = serde_urlencoded::from_str::<Vec<(String, String)>>(q.as_deref().unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .any(|(k, _)| k == "token");
    if in_url {
        return Err(ApiError::field(
            "token",
            "is not taken in the URL: send {\"op\":\"auth\",\"token\":\"…\"} as the first message",
        ));
    }
    // Every connection starts anonymous, and counts against its address
    // until it authenticates.
    let anonymous = state.limits.ws_open(ip).inspect_err(|_| {
        metrics::counter!("shopstream_ws_refused_total", "why" => "address").increment(1);
    })?;
    Ok(ws
        .max_message_size(16 * 1024)
        .on_upgrade(move |socket| Connection::new(state, anonymous).run(socket)))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ClientMessage {
    Auth { token: String },
    Subscribe { topic: String },
    Unsubscribe { topic: String },
    Ping,
}

/// A topic a connection may subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    Stock(Option<String>),
    Analytics,
    Alerts,
    Orders,
}

impl Topic {
    fn parse(s: &str) -> Option<Topic> {
        Some(match s {
            "stock" => Topic::Stock(None),
            "analytics" => Topic::Analytics,
            "alerts" => Topic::Alerts,
            "orders" => Topic::Orders,
            s => {
                let id = s.strip_prefix("stock:")?;
                id.parse::<domain::ProductId>().ok()?;
                Topic::Stock(Some(id.to_owned()))
            }
        })
    }

    fn name(&self) -> String {
        match self {
            Topic::Stock(None) => "stock".into(),
            Topic::Stock(Some(id)) => format!("stock:{id}"),
            Topic::Analytics => "analytics".into(),
            Topic::Alerts => "alerts".into(),
            Topic::Orders => "orders".into(),
        }
    }
}

/// Close code 1013: try again later (the client could not keep up).
const CLOSE_TOO_SLOW: u16 = 1013;
/// Close code 1001: going away (no pong, or the server stops).
const CLOSE_GONE: u16 = 1001;

struct Connection {
    state: AppState,
    caller: Option<Caller>,
    _slot: Option<Slot>,
    /// The anonymous connection's place in its address's count, until it
    /// authenticates.
    anonymous: Option<WsSlot>,
    /// How many subscriptions (snapshot reads) it may still make.
    snapshots: Option<governor::DefaultDirectRateLimiter>,
    /// What waits for the socket, and the subscriptions.
    outbox: Arc<Outbox>,
}

enum Outcome {
    Open,
    Close(u16, String),
}

impl Connection {
    fn new(state: AppState, anonymous: WsSlot) -> Self {
        let snapshots = state.limits.snapshots();
        let outbox = Arc::new(Outbox::new(state.config.ws.queue));
        Self {
            state,
            caller: None,
            _slot: None,
            anonymous: Some(anonymous),
            snapshots,
            outbox,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let _open = self.state.hub.opened();
        let mut closing = self.state.hub.closing.subscribe();
        let config = self.state.config.ws.clone();
        let (mut sink, mut stream) = socket.split();
        let (close_tx, mut close_rx) = oneshot::channel::<(u16, String)>();
        let mut bus = self.state.hub.fanout.attach(&self.state.bus, &self.outbox);
        let outbox = self.outbox.clone();
        // The writer: the only task that waits on this client's socket.
        let writer = tokio::spawn(async move {
            let close = 'writing: loop {
                let ms = match outbox.take() {
                    Work::Send(ms) => ms,
                    Work::Nothing => tokio::select! {
                        biased;
                        close = &mut close_rx => break close.ok(),
                        _ = outbox.woken() => continue,
                    },
                };
                for m in ms {
                    tokio::select! {
                        biased;
                        close = &mut close_rx => break 'writing close.ok(),
                        r = sink.send(m) => if r.is_err() { break 'writing None },
                    }
                    metrics::counter!("shopstream_ws_messages_total").increment(1);
                }
            };
            if let Some((code, reason)) = close {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                };
                let close = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
            }
        });
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.tick().await;
        let mut last_seen = Instant::now();
        let outcome = loop {
            let step = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        last_seen = Instant::now();
                        self.on_message(t.as_str()).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        last_seen = Instant::now();
                        self.send(json!({"type": "error", "message": "send JSON text messages"}))
                    }
                    Some(Ok(Message::Pong(_) | Message::Ping(_))) => {
                        last_seen = Instant::now();
                        Outcome::Open
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                },
                change = bus.recv() => match change {
                    Ok(c) => self.on_change(&c),
                    // This connection's task fell behind the bus.
                    Err(RecvError::Lagged(n)) => Outcome::Close(CLOSE_TOO_SLOW, format!("too slow: missed {n} changes; reconnect and resubscribe")),
                    Err(RecvError::Closed) => break None,
                },
                () = async { let _ = closing.wait_for(|c| *c).await; } => Outcome::Close(CLOSE_GONE, "the server is shutting down; connect again".into()),
                _ = ping.tick() => {
                    if last_seen.elapsed() > config.ping_interval * 3 {
                        Outcome::Close(CLOSE_GONE, "no answer to pings".into())
                    } else {
                        match self.outbox.send(Message::Ping(Default::default())) {
                            Ok(()) => Outcome::Open,
                            Err(_) => slow(),
                        }
                    }
                }
            };
            if let Outcome::Close(code, reason) = step {
                break Some((code, reason));
            }
        };
        if let Some((code, reason)) = outcome {
            if code == CLOSE_TOO_SLOW {
                metrics::counter!("shopstream_ws_slow_disconnects_total").increment(1);
            }
            tracing::debug!(code, %reason, "closing websocket");
            let _ = close_tx.send((code, reason));
        } else {
            drop(close_tx);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }

    fn allowed(&self, topic: &Topic) -> Result<(), &'static str> {
        let role = self.caller.as_ref().map(|c| c.role);
        match topic {
            Topic::Stock(_) => Ok(()),
            Topic::Analytics if role == Some(Role::Admin) => Ok(()),
            Topic::Analytics => Err("the analytics topic needs the admin role"),
            Topic::Alerts if role == Some(Role::Admin) => Ok(()),
            Topic::Alerts
                if self
                    .caller
                    .as_ref()
                    .is_some_and(|c| c.role == Role::Supplier && c.supplier_id.is_some()) =>
            {
                Ok(())
            }
            Topic::Alerts => Err("the alerts topic needs the supplier or the admin role"),
            Topic::Orders if self.caller.is_some() => Ok(()),
            Topic::Orders => Err("the orders topic needs a logged-in user"),
        }
    }

    async fn on_message(&mut self, text: &str) -> Outcome {
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                return self.send(
                    json!({"type": "error", "message": format!("not a message this server understands: {e}")}),
                );
            }
        };
        match msg {
            ClientMessage::Ping => self.send(json!({"type": "pong"})),
            ClientMessage::Auth { token } => {
                if self.caller.is_some() {
                    return self.send(json!({"type": "error", "message": "already authenticated"}));
                }
                match self.state.tokens.verify_access(&token).await {
                    Ok(c) => {
                        let max = self.state.config.ws.max_connections_per_user;
                        match self.state.hub.admit(&c.subject, max) {
                            Some(slot) => {
                                self._slot = Some(slot);
                                self.anonymous = None;
                                let role = c.role.as_str();
                                self.caller = Some(c);
                                self.send(json!({"type": "authenticated", "role": role}))
                            }
                            None => Outcome::Close(
                                1008,
                                format!("at most {max} websocket connections per user"),
                            ),
                        }
                    }
                    Err(e) => self.send(json!({"type": "error", "message": e.to_string()})),
                }
            }
            ClientMessage::Unsubscribe { topic } => {
                let removed = Topic::parse(&topic).and_then(|t| self.outbox.lock().subs.remove(&t));
                match removed {
                    Some(_) => self.send(json!({"type": "unsubscribed", "topic": topic})),
                    None => self.send(
                        json!({"type": "error", "message": format!("not subscribed to {topic:?}")}),
                    ),
                }
            }
            ClientMessage::Subscribe { topic: name } => {
                let Some(topic) = Topic::parse(&name) else {
                    return self.send(
                        json!({"type": "error", "message": format!("unknown topic {name:?}: stock, stock:{{product_id}}, analytics, alerts, orders")}),
                    );
                };
                if let Err(why) = self.allowed(&topic) {
                    return self.send(json!({"type": "error", "topic": name, "message": why}));
                }
                let max = self.state.config.ws.max_subscriptions;
                let full = {
                    let p = self.outbox.lock();
                    !p.subs.contains_key(&topic) && p.subs.len() >= max
                };
                if full {
                    return self.send(
                        json!({"type": "error", "topic": name, "message": format!("at most {max} subscriptions per connection")}),
                    );
                }
                if let Err(ApiError::TooManyRequests { retry_after, .. }) =
                    Limits::snapshot(self.snapshots.as_ref())
                {
                    let secs = retry_after.as_secs().max(1);
                    return self.send(json!({"type": "error", "topic": name, "retry_after": secs,
                            "message": format!("too many subscriptions; try again in {secs} s")}));
                }
                // Stock batches wait from here until the snapshot is queued.
                self.outbox.lock().subscribing += 1;
                let read = self.snapshot(&topic).await;
                let mut p = self.outbox.lock();
                p.subscribing -= 1;
                let (data, seen) = match read {
                    Ok(d) => d,
                    Err(e) => {
                        drop(p);
                        tracing::warn!(error = %e, topic = %name, "websocket snapshot failed");
                        return self.send(
                            json!({"type": "error", "topic": name, "message": "the snapshot could not be read; subscribe again"}),
                        );
                    }
                };
                for (id, version) in seen {
                    p.saw(&id, version);
                }
                p.subs.insert(topic, 0);
                drop(p);
                metrics::counter!("shopstream_ws_snapshots_total").increment(1);
                self.send(json!({"type": "snapshot", "topic": name, "seq": 0, "data": data}))
            }
        }
    }

    /// A topic's snapshot, and the stock versions it shows.
    async fn snapshot(&self, topic: &Topic) -> Result<(Value, Vec<(String, u64)>), ApiError> {
        let tables = &self.state.tables;
        let level = |id: &str, s: &processors::state::Stock| {
            let mut v = stock_json(id, s.on_hand, s.reserved, s.available, s.backorder);
            v["version"] = s.version.into();
            v
        };
        let data = match topic {
            Topic::Stock(Some(id)) => {
                let s = tables.stock(id).await?.unwrap_or_default();
                return Ok((level(id, &s), vec![(id.clone(), s.version)]));
            }
            Topic::Stock(None) => {
                let (items, _) = tables.stock_page(1000, None, false).await?;
                let data = items.iter().map(|(id, s)| level(id, s)).collect();
                let seen = items.into_iter().map(|(id, s)| (id, s.version)).collect();
                return Ok((Value::Array(data), seen));
            }
            Topic::Analytics => {
                let minutes = tables.minutes(time::OffsetDateTime::now_utc(), 60).await?;
                Value::Array(
                    minutes
                        .into_iter()
                        .map(|(m, c)| json!({"minute": m, "views": c.views, "basket_adds": c.basket_adds, "purchases": c.purchases, "units": c.units, "revenue": c.revenue.to_string()}))
                        .collect(),
                )
            }
            Topic::Alerts => match self.caller.as_ref().and_then(|c| c.supplier_id.clone()) {
                Some(s) if self.caller.as_ref().is_some_and(|c| c.role != Role::Admin) => {
                    let (alerts, _) = tables.alerts(&s, 20, None).await?;
                    serde_json::to_value(alerts).unwrap_or(Value::Array(Vec::new()))
                }
                // An admin's alerts come from every supplier: the snapshot
                // is empty, `GET /api/supplier/alerts` pages through them.
                _ => json!([]),
            },
            Topic::Orders => {
                let caller = self.caller.as_ref().expect("checked by allowed");
                let user = (caller.role != Role::Admin).then_some(caller.subject.as_str());
                let page = self.state.shop.orders(user, None, 20, None).await?;
                serde_json::to_value(page.items).unwrap_or_default()
            }
        };
        Ok((data, Vec::new()))
    }

    /// A change that is not stock (stock goes through the fan-out).
    fn on_change(&mut self, change: &Change) -> Outcome {
        let caller = self.caller.clone();
        let admin = caller.as_ref().is_some_and(|c| c.role == Role::Admin);
        let mut sends = Vec::new();
        for (topic, seq) in self.outbox.lock().subs.iter_mut() {
            let data = match (topic, change) {
                (Topic::Alerts, Change::LowStockAlert(a))
                    if admin
                        || caller
                            .as_ref()
                            .and_then(|c| c.supplier_id.as_deref())
                            .is_some_and(|s| s == a.supplier_id) =>
                {
                    serde_json::to_value(a).unwrap_or_default()
                }
                (
                    Topic::Analytics,
                    Change::AnalyticsTick { .. } | Change::RecommendationTick { .. },
                ) => serde_json::to_value(change).unwrap_or_default(),
                (Topic::Orders, Change::OrderUpdated { user_id, .. })
                    if admin || caller.as_ref().is_some_and(|c| &c.subject == user_id) =>
                {
                    serde_json::to_value(change).unwrap_or_default()
                }
                _ => continue,
            };
            *seq += 1;
            sends.push(json!({"type": "change", "topic": topic.name(), "seq": *seq, "data": data}));
        }
        for m in sends {
            if let Outcome::Close(c, r) = self.send(m) {
                return Outcome::Close(c, r);
            }
        }
        Outcome::Open
    }

    /// Queues a message without waiting: a full queue means the client is
    /// too slow, and it is cut off.
    fn send(&self, v: Value) -> Outcome {
        match self
            .outbox
            .send(Message::Text(Utf8Bytes::from(v.to_string())))
        {
            Ok(()) => Outcome::Open,
            Err(_) => slow(),
        }
    }
}

fn stock_json(id: &str, on_hand: i64, reserved: i64, available: i64, backorder: i64) -> Value {
    json!({"product_id": id, "on_hand": on_hand, "reserved": reserved, "available": available, "backorder": backorder})
}

fn slow() -> Outcome {
    Outcome::Close(
        CLOSE_TOO_SLOW,
        "too slow: the client did not keep up with its messages; reconnect and resubscribe".into(),
    )
}
