//! Websocket fan-out load: `N` clients subscribe to `stock`, then
//! `RATE` stock changes per second (one product each, round robin over
//! `PRODUCTS`) are posted to `POST /api/events` for `SECS` seconds.
//!
//! Prints, for the stock levels clients received: the delay from the
//! pipeline's commit (`committed_at` in each item, same clock) and from the
//! event's acceptance (`202`) to the client; frames and items delivered;
//! how many levels were skipped as stale (coalesced: a newer level of the
//! same product came in the same tick); sequence gaps; close codes; and how
//! many clients ended with every product at the last level posted (the
//! promise of coalescing: the latest value always arrives). Used by
//! `scripts/bench/ws.sh`.
//!
//! Usage: ws_fanout BASE_URL ADMIN_EMAIL ADMIN_PASSWORD CLIENTS RATE SECS PRODUCTS

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::{connect_async, tungstenite::Message};

mod common;

/// What one client saw.
#[derive(Default)]
struct Client {
    frames: u64,
    items: u64,
    gaps: u64,
    seq: u64,
    close: Option<u16>,
    /// The latest level received per product (by index).
    levels: Vec<i64>,
}

/// The part of a message the client reads (borrowed, to keep the load
/// generator's own cost low: it shares the cores with the server).
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    topic: &'a str,
    #[serde(default)]
    seq: u64,
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

/// A list of levels per frame; one level per message before coalescing
/// (so the same generator measures the old server too).
#[derive(Deserialize)]
#[serde(untagged)]
enum Data<'a> {
    #[serde(borrow)]
    Many(Vec<Item<'a>>),
    #[serde(borrow)]
    One(Item<'a>),
}

#[derive(Deserialize)]
struct Item<'a> {
    product_id: &'a str,
    on_hand: i64,
    committed_at: Option<i64>,
}

/// This process's CPU time (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(f64::NAN, |(u, s)| (u + s) / 100.0)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, email, password, clients, rate, secs, products] = &args[..] else {
        eprintln!(
            "usage: ws_fanout BASE_URL ADMIN_EMAIL ADMIN_PASSWORD CLIENTS RATE SECS PRODUCTS"
        );
        std::process::exit(2);
    };
    let (clients, rate, secs, products): (usize, u64, u64, usize) = (
        clients.parse().unwrap(),
        rate.parse().unwrap(),
        secs.parse().unwrap(),
        products.parse().unwrap(),
    );
    let http = reqwest::Client::new();
    let admin = common::login(&http, base, email, password).await;
    let ids: Vec<String> = (0..products)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let index: Arc<HashMap<String, usize>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect(),
    );
    // When each (product, level) was accepted.
    let sent: Arc<RwLock<HashMap<(usize, i64), Instant>>> = Arc::default();
    let ws_base = base.replace("http://", "ws://");
    let mut sockets = Vec::new();
    for _ in 0..clients {
        let (mut ws, _) = connect_async(format!("{ws_base}/ws")).await.unwrap();
        ws.send(Message::Text(
            json!({"op": "subscribe", "topic": "stock"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        sockets.push(ws);
    }
    let from_accept: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let from_commit: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seen: Vec<Arc<Mutex<Client>>> = (0..clients)
        .map(|_| {
            Arc::new(Mutex::new(Client {
                levels: vec![0; products],
                ..Client::default()
            }))
        })
        .collect();
    let readers: Vec<_> = sockets
        .into_iter()
        .zip(&seen)
        .map(|(mut ws, client)| {
            let (index, sent, from_accept, from_commit, client) = (
                index.clone(),
                sent.clone(),
                from_accept.clone(),
                from_commit.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let (mut accept, mut commit) = (Vec::new(), Vec::new());
                while let Some(Ok(m)) = ws.next().await {
                    let t = match m {
                        Message::Text(t) => t,
                        Message::Close(frame) => {
                            client.lock().unwrap().close =
                                Some(frame.map_or(1005, |f| f.code.into()));
                            break;
                        }
                        _ => continue,
                    };
                    let Ok(f) = serde_json::from_str::<Frame>(t.as_str()) else {
                        continue;
                    };
                    if f.kind != "change" || f.topic != "stock" {
                        continue;
                    }
                    let items = match f.data {
                        Some(Data::Many(items)) => items,
                        Some(Data::One(item)) => vec![item],
                        None => Vec::new(),
                    };
                    let now = (Instant::now(), unix_ms());
                    let mut c = client.lock().unwrap();
                    if f.seq != c.seq + 1 {
                        c.gaps += 1;
                    }
                    c.seq = f.seq;
                    c.frames += 1;
                    c.items += items.len() as u64;
                    let sent = sent.read().unwrap();
                    for item in &items {
                        if let Some(at) = item.committed_at {
                            commit.push(now.1 - at);
                        }
                        let Some(&i) = index.get(item.product_id) else {
                            continue;
                        };
                        if let Some(at) = sent.get(&(i, item.on_hand)) {
                            accept.push(now.0.saturating_duration_since(*at));
                        }
                        c.levels[i] = item.on_hand;
                    }
                    drop((c, sent));
                    from_accept.lock().unwrap().append(&mut accept);
                    from_commit.lock().unwrap().append(&mut commit);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = rate * secs;
    let started = Instant::now();
    let mut level = vec![0i64; products];
    let batch = (rate / 20).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 * batch / rate));
    let mut posted = 0;
    while posted < total {
        ticker.tick().await;
        let mut events = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..batch {
            let i = posted as usize % ids.len();
            level[i] += 1;
            keys.push((i, level[i]));
            events.push(json!({"type": "stock.adjusted", "source": "bench", "data": {"product_id": ids[i], "delta": 1, "reason": "received"}}));
            posted += 1;
        }
        let r = http
            .post(format!("{base}/api/events"))
            .bearer_auth(&admin)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let now = Instant::now();
        let mut s = sent.write().unwrap();
        for k in keys {
            s.insert(k, now);
        }
    }
    let posting = started.elapsed().as_secs_f64();
    // Wait (up to 30 s) for every open client to hold the last level of
    // every product.
    let current = |c: &Client| c.levels == level;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !seen.iter().all(|c| {
            let c = c.lock().unwrap();
            c.close.is_some() || current(&c)
        })
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for r in &readers {
        r.abort();
    }

    let (mut frames, mut items, mut gaps, mut up_to_date) = (0, 0, 0, 0);
    let mut closes: HashMap<u16, usize> = HashMap::new();
    for c in &seen {
        let c = c.lock().unwrap();
        frames += c.frames;
        items += c.items;
        gaps += c.gaps;
        up_to_date += usize::from(current(&c));
        if let Some(code) = c.close {
            *closes.entry(code).or_default() += 1;
        }
    }
    let mut accept = std::mem::take(&mut *from_accept.lock().unwrap());
    let mut commit = std::mem::take(&mut *from_commit.lock().unwrap());
    accept.sort();
    commit.sort();
    fn pct<T: Copy>(d: &[T], p: f64) -> Option<T> {
        (!d.is_empty()).then(|| d[((d.len() as f64 * p) as usize).min(d.len() - 1)])
    }
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    let commit_ms = |d: Option<i64>| d.map_or(f64::NAN, |d| d as f64);
    let offered = total * clients as u64;
    println!(
        "ws fan-out: {clients} clients, {total} changes posted in {posting:.1} s ({:.0}/s); \
         {frames} frames carrying {items} levels in {elapsed:.1} s ({:.0} levels/s); \
         {} of {offered} levels skipped as stale ({:.1} %); sequence gaps {gaps}; \
         closed {closes:?}; {up_to_date}/{clients} clients ended with every product's last level; \
         delay commit→client p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         accepted (202)→client p50 {:.1} ms, p99 {:.1} ms; \
         load generator CPU {:.1} s",
        total as f64 / posting,
        items as f64 / elapsed,
        offered.saturating_sub(items),
        100.0 * offered.saturating_sub(items) as f64 / offered.max(1) as f64,
        commit_ms(pct(&commit, 0.5)),
        commit_ms(pct(&commit, 0.99)),
        commit_ms(commit.last().copied()),
        ms(pct(&accept, 0.5)),
        ms(pct(&accept, 0.99)),
        cpu_seconds(),
    );
}
