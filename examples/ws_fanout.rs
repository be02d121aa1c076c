//! Websocket fan-out load: `N` clients subscribe to `stock`, then
//! `RATE` stock changes per second (one product each, round robin over
//! `PRODUCTS`) are posted to `POST /api/events` for `SECS` seconds. Prints
//! delivered messages/s and the delay from the event's acceptance (202) to
//! each client receiving the change, which includes the pipeline's commit.
//! Used by `scripts/bench/ws.sh`.
//!
//! Usage: ws_fanout BASE_URL ADMIN_EMAIL ADMIN_PASSWORD CLIENTS RATE SECS PRODUCTS

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{connect_async, tungstenite::Message};

mod common;

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
    // When each (product, level) was accepted.
    let sent: Arc<Mutex<HashMap<(String, i64), Instant>>> = Arc::default();
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
    let delays: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let sent = sent.clone();
            let delays = delays.clone();
            tokio::spawn(async move {
                let mut got = 0u64;
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] != "change" {
                            continue;
                        }
                        got += 1;
                        let key = (
                            v["data"]["product_id"].as_str().unwrap_or("").to_owned(),
                            v["data"]["on_hand"].as_i64().unwrap_or(0),
                        );
                        if let Some(at) = sent.lock().unwrap().get(&key) {
                            delays.lock().unwrap().push(at.elapsed());
                        }
                    }
                }
                got
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = rate * secs;
    let started = Instant::now();
    let mut level: HashMap<String, i64> = HashMap::new();
    let batch = (rate / 20).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 * batch / rate));
    let mut posted = 0;
    while posted < total {
        ticker.tick().await;
        let mut events = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..batch {
            let id = &ids[posted as usize % ids.len()];
            let l = level.entry(id.clone()).or_default();
            *l += 1;
            keys.push((id.clone(), *l));
            events.push(json!({"type": "stock.adjusted", "source": "bench", "data": {"product_id": id, "delta": 1, "reason": "received"}}));
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
        let mut s = sent.lock().unwrap();
        for k in keys {
            s.insert(k, now);
        }
    }
    let posting = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let delays = std::mem::take(&mut *delays.lock().unwrap());
    for r in &readers {
        r.abort();
    }
    let mut d = delays;
    d.sort();
    let pct = |p: f64| d[((d.len() as f64 * p) as usize).min(d.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "ws fan-out: {clients} clients, {total} changes posted in {posting:.1} s ({:.0}/s); {} messages delivered = {:.0} messages/s over {elapsed:.1} s; delay accepted→client p50 {:.1} ms, p99 {:.1} ms",
        total as f64 / posting,
        d.len(),
        d.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}
