//! Checkout load generator: `C` customers, each in a loop adding one unit of
//! a product (1 hot product, or one of `P`) to its basket and checking out
//! with the approving test card, for `SECS` seconds. Prints checkouts/s and
//! the checkout latency percentiles. Used by `scripts/bench/checkout.sh`.
//!
//! Usage: checkout_load BASE_URL ADMIN_EMAIL ADMIN_PASSWORD PRODUCTS CLIENTS SECS

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, email, password, products, clients, secs] = &args[..] else {
        eprintln!("usage: checkout_load BASE_URL ADMIN_EMAIL ADMIN_PASSWORD PRODUCTS CLIENTS SECS");
        std::process::exit(2);
    };
    let (products, clients, secs): (usize, usize, u64) = (
        products.parse().unwrap(),
        clients.parse().unwrap(),
        secs.parse().unwrap(),
    );
    let http = reqwest::Client::new();
    let admin = common::login(&http, base, email, password).await;
    let mut ids = Vec::new();
    for i in 0..products {
        let p: Value = http
            .post(format!("{base}/api/products"))
            .bearer_auth(&admin)
            .json(&json!({"sku": format!("LOAD-{}-{i}", uuid::Uuid::new_v4().simple()), "name": format!("Load {i}"),
                "price": "9.99", "currency": "EUR", "category": "load", "low_stock_threshold": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "stock.adjusted", "source": "bench", "data": {"product_id": id, "delta": 1_000_000, "reason": "received"}}))
        .collect();
    for chunk in events.chunks(100) {
        let r = http
            .post(format!("{base}/api/events"))
            .bearer_auth(&admin)
            .json(&chunk)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 202, "{}", r.text().await.unwrap());
    }
    for id in &ids {
        loop {
            let s: Value = http
                .get(format!("{base}/api/inventory/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["available"].as_i64() == Some(1_000_000) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut tokens = Vec::new();
    for i in 0..clients {
        let r: Value = http
            .post(format!("{base}/api/auth/register"))
            .json(&json!({"email": format!("load{i}-{}@example.com", uuid::Uuid::new_v4().simple()), "password": "a long enough password", "name": "Load"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r["access_token"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(c, token)| {
            let http = http.clone();
            let ids = ids.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failed = 0u64;
                let mut n = c;
                while Instant::now() < deadline {
                    let id = &ids[n % ids.len()];
                    n += 1;
                    let r = http
                        .post(format!("{base}/api/basket/items"))
                        .bearer_auth(&token)
                        .json(&json!({"product_id": id, "quantity": 1}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/api/checkout"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                        .json(&json!({"card_number": "4242424242424242"}))
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 201 {
                        lat.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                    let _ = r.bytes().await;
                }
                (lat, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "checkout: {} paid in {:.1} s = {:.0} checkouts/s ({} products, {} clients, {} failed); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        products,
        clients,
        failed,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
