//! Events in over HTTP and from files, state out: the collector's rules, dead
//! letters, and the crash test — the real binary killed with SIGKILL while it
//! processes, with every total exact at the end.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{App, Backend, Env, eventually},
    on_both_backends,
};

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn envelope(kind: &str, data: Value) -> Value {
    json!({"id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": now(), "source": "e2e", "data": data})
}

async fn on_hand(app: &App, product: &str) -> (i64, i64) {
    let r = app.get(&format!("/api/inventory/{product}")).await;
    (
        r.body["on_hand"].as_i64().unwrap_or(i64::MIN),
        r.body["backorder"].as_i64().unwrap_or(i64::MIN),
    )
}

async fn collector_rules_and_dead_letters(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let product = crate::helpers::create_product(&app, &admin, "COLLECT-1").await;

    let r = app
        .call(Method::POST, "/api/events", Some(&admin), Some(json!([
            {"type": "stock.adjusted", "data": {"product_id": product, "delta": 9, "reason": "received"}},
            {"type": "stock.adjusted", "data": {"product_id": product, "delta": -2}},
            {"type": "stock.magic", "data": {}},
            {"type": "basket.added", "data": {"session_id": "s", "product_id": product, "quantity": 0}},
        ])))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["accepted"], 1);
    let reasons: Vec<(u64, &str)> = r.body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "invalid_payload"),
            (2, "unknown_type"),
            (3, "negative_quantity")
        ]
    );
    eventually("stock applied", || async {
        if on_hand(&app, &product).await.0 == 9 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;

    // Customers and anonymous sessions may only send behaviour about themselves.
    let (customer, _, user_id) = app.customer("c@example.com").await;
    let stock_by_customer = app
        .call(Method::POST, "/api/events", Some(&customer), Some(json!([
            {"type": "stock.adjusted", "data": {"product_id": product, "delta": 1000, "reason": "x"}}])))
        .await;
    assert_eq!(stock_by_customer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        stock_by_customer.text.contains("forbidden"),
        "{}",
        stock_by_customer.text
    );
    let own = app
        .call(Method::POST, "/api/events", Some(&customer), Some(json!([
            {"type": "browse.viewed", "data": {"user_id": user_id, "product_id": product}},
            {"type": "browse.viewed", "data": {"user_id": "someone-else", "product_id": product}}])))
        .await;
    assert_eq!(own.status, StatusCode::ACCEPTED);
    assert_eq!(own.body["accepted"], 1);
    let anonymous = app
        .send(
            app.http
                .post(app.url("/api/events"))
                .header("x-session-id", "sess-1")
                .json(&json!([
            {"type": "browse.viewed", "data": {"session_id": "sess-1", "product_id": product}},
            {"type": "browse.viewed", "data": {"session_id": "sess-2", "product_id": product}}])),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::ACCEPTED, "{}", anonymous.text);
    assert_eq!(anonymous.body["accepted"], 1);
    assert_eq!(
        app.call(
            Method::POST,
            "/api/events",
            Some(&admin),
            Some(json!({"not": "an array"}))
        )
        .await
        .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    eventually("views counted", || async {
        let s = app
            .call(
                Method::GET,
                "/api/analytics/summary?minutes=10",
                Some(&admin),
                None,
            )
            .await;
        if s.body["totals"]["views"] == 2 {
            Ok(())
        } else {
            Err(s.text)
        }
    })
    .await;
    assert_eq!(
        app.call(Method::GET, "/api/analytics/summary", Some(&customer), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    app.stop().await;

    // Records that reach the stream bad (here from a file) are dead-lettered.
    let file = env.dir.path().join("bad.jsonl");
    let good = envelope(
        "stock.adjusted",
        json!({"product_id": product, "delta": 1, "reason": "received"}),
    );
    std::fs::write(
        &file,
        format!(
            "{{oops\n{good}\n{}\n",
            envelope("order.teleported", json!({}))
        ),
    )
    .unwrap();
    let (code, out, err) = env
        .run(&["produce", "--file", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent 3, failed 0"), "{out}");
    let app = env.start().await;
    let admin = app.admin_token().await;
    eventually("dead letters listed", || async {
        let r = app
            .call(Method::GET, "/api/admin/dead-letters", Some(&admin), None)
            .await;
        let mut reasons: Vec<String> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["reason"].as_str().unwrap().to_owned())
            .collect();
        reasons.sort();
        if reasons == ["malformed_json", "unknown_type"] {
            Ok(())
        } else {
            Err(r.text)
        }
    })
    .await;
    assert_eq!(
        on_hand(&app, &product).await.0,
        10,
        "the good record between them applied"
    );
    app.stop().await;
}

/// Hostile input never stalls the log: a 350 KB line that is not JSON and
/// 31 malformed 100 KB records in one batch are dead-lettered (bounded, with
/// their length and SHA-256), and the good record after them applies; the
/// collector refuses a 3,000-character session id with a 422 naming the
/// field.
async fn huge_and_hostile_records_never_stall_the_log(backend: Backend) {
    let env = Env::new(backend);
    let product = uuid::Uuid::now_v7().to_string();
    let file = env.dir.path().join("hostile.jsonl");
    let mut lines = vec!["x".repeat(350 * 1024)];
    for i in 0..31 {
        lines.push(format!(
            "{{\"n\": {i}, \"pad\": \"{}",
            "p".repeat(100 * 1024)
        ));
    }
    lines.push(
        envelope(
            "stock.adjusted",
            json!({"product_id": product, "delta": 7, "reason": "received"}),
        )
        .to_string(),
    );
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    if backend == Backend::Aws {
        let (code, out, err) = env.run(&["init"]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = env
        .run(&["produce", "--file", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent 33, failed 0"), "{out}");

    let app = env.start().await;
    let admin = app.admin_token().await;
    eventually("the good record after the hostile ones applied", || async {
        match on_hand(&app, &product).await.0 {
            7 => Ok(()),
            n => Err(format!("on hand {n}")),
        }
    })
    .await;
    // The bad lines have no partition key of their own, so they may be on
    // another partition than the good record: wait for them too.
    let list = || {
        app.call(
            Method::GET,
            "/api/admin/dead-letters?limit=100",
            Some(&admin),
            None,
        )
    };
    eventually("the hostile records dead-lettered", || async {
        let r = list().await;
        match r.body["items"].as_array().map_or(0, Vec::len) {
            32 => Ok(()),
            n => Err(format!("{n} dead letters")),
        }
    })
    .await;
    let listed = list().await.body;
    let items = listed["items"].as_array().unwrap();
    let huge = items
        .iter()
        .find(|d| d["raw_len"] == 350 * 1024)
        .expect("the 350 KB record");
    assert_eq!(huge["reason"], "oversized");
    assert_eq!(huge["truncated"], true);
    assert_eq!(huge["raw"].as_str().unwrap().len(), 4096);
    assert_eq!(huge["raw_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        items.iter().filter(|d| d["reason"] == "oversized").count(),
        32,
        "100 KB records are over the 64 KiB event limit too"
    );
    // A truncated dead letter cannot be replayed: 409, and it stays listed.
    let replay = app
        .call(
            Method::POST,
            &format!(
                "/api/admin/dead-letters/{}/replay",
                huge["id"].as_str().unwrap().replace('#', "%23")
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.text);

    let long = app
        .send(
            app.http
                .post(app.url("/api/events"))
                .header("x-session-id", "s".repeat(3000))
                .json(&json!([{"type": "browse.viewed",
                    "data": {"session_id": "s".repeat(3000), "product_id": product}}])),
        )
        .await;
    assert_eq!(
        long.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        long.text
    );
    assert_eq!(
        long.problem_fields(),
        ["[0].data.session_id"],
        "{}",
        long.text
    );
    app.stop().await;
}

/// What a browser says is not trusted: the server sets `source`, clamps
/// `occurred_at` to its own clock, ignores recommendation ids it did not
/// issue to that session, and refuses behaviour about unknown products.
async fn browser_events_are_not_trusted(backend: Backend) {
    let app = Env::new(backend).start().await;
    let admin = app.admin_token().await;
    let product = crate::helpers::create_product(&app, &admin, "TRUST-1").await;
    let (me, other) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let post_as = |session: &str, events: Value| {
        app.send(
            app.http
                .post(app.url("/api/events"))
                .header("x-session-id", session)
                .json(&events),
        )
    };
    // A genuine id, issued to session s-trust by the recommendations API.
    let recs = app
        .send(
            app.http
                .get(app.url("/api/recommendations"))
                .header("x-session-id", &me),
        )
        .await;
    assert_eq!(recs.status, StatusCode::OK, "{}", recs.text);
    let genuine = recs.body["recommendation_id"].as_str().unwrap().to_owned();
    let version = genuine.split('~').next().unwrap().to_owned();
    let r = post_as(
        &me,
        json!([
            {"type": "browse.viewed", "source": "warehouse-7", "occurred_at": "2001-01-01T00:00:00Z",
             "data": {"session_id": me, "product_id": product, "recommendation_id": "vFAKE-1~1~x"}},
            {"type": "browse.viewed",
             "data": {"session_id": me, "product_id": uuid::Uuid::now_v7(), }},
            {"type": "browse.viewed",
             "data": {"session_id": me, "product_id": product, "recommendation_id": genuine}},
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["accepted"], 2, "{}", r.text);
    assert_eq!(r.body["rejected"][0]["index"], 1);
    assert_eq!(r.body["rejected"][0]["reason"], "unknown_product");
    assert_eq!(r.body["rejected"][0]["field"], "data.product_id");
    // The same genuine id from another session does not count.
    let r = post_as(
        &other,
        json!([{"type": "browse.viewed",
            "data": {"session_id": other, "product_id": product, "recommendation_id": genuine}}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Both views count in this minute (the 2001 one was clamped to now)...
    eventually("views counted now", || async {
        let s = app
            .call(
                Method::GET,
                "/api/analytics/summary?minutes=5",
                Some(&admin),
                None,
            )
            .await;
        if s.body["totals"]["views"] == 3 {
            Ok(())
        } else {
            Err(s.text)
        }
    })
    .await;
    // ...and attribution has exactly one click, for the genuine id's version.
    let a = app
        .call(
            Method::GET,
            "/api/analytics/recommendations",
            Some(&admin),
            None,
        )
        .await;
    assert!(!a.text.contains("vFAKE"), "{}", a.text);
    let clicks: i64 = a
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["model_version"] == version.as_str())
        .map(|row| row["clicks"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(clicks, 1, "{}", a.text);
    app.stop().await;
}

on_both_backends!(
    browser_events_are_not_trusted,
    collector_rules_and_dead_letters,
    huge_and_hostile_records_never_stall_the_log
);

/// Expected totals of a generated stream.
#[derive(Default)]
pub(crate) struct Totals {
    /// Per product: on_hand - backorder.
    net: BTreeMap<String, i64>,
    views: i64,
    adds: i64,
    purchases: i64,
    units: i64,
    bad: i64,
}

pub(crate) fn generate(n: usize, products: usize) -> (String, Totals) {
    let ids: Vec<String> = (0..products)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let mut totals = Totals::default();
    let mut out = String::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    for i in 0..n {
        let p = &ids[rand(products as u64) as usize];
        let e = match rand(20) {
            0..=7 => {
                let delta = rand(25) as i64 - 5;
                let delta = if delta == 0 { 1 } else { delta };
                *totals.net.entry(p.clone()).or_default() += delta;
                envelope(
                    "stock.adjusted",
                    json!({"product_id": p, "delta": delta, "reason": "gen"}),
                )
            }
            8..=14 => {
                totals.views += 1;
                envelope(
                    "browse.viewed",
                    json!({"session_id": format!("s{}", rand(100)), "product_id": p}),
                )
            }
            15..=16 => {
                totals.adds += 1;
                envelope(
                    "basket.added",
                    json!({"user_id": format!("u{}", rand(50)), "product_id": p, "quantity": 1}),
                )
            }
            17..=18 => {
                let q = rand(3) as i64 + 1;
                totals.purchases += 1;
                totals.units += q;
                *totals.net.entry(p.clone()).or_default() -= q;
                envelope(
                    "purchase.completed",
                    json!({"order_id": format!("o{i}"), "user_id": format!("u{}", rand(50)),
                    "lines": [{"product_id": p, "quantity": q, "unit_price": "2.50"}],
                    "total": format!("{}", q as f64 * 2.5), "currency": "EUR"}),
                )
            }
            _ => {
                totals.bad += 1;
                json!({"type": "stock.adjusted", "data": {"product_id": p, "delta": "lots"}})
            }
        };
        out.push_str(&e.to_string());
        out.push('\n');
    }
    (out, totals)
}

pub(crate) async fn verify(app: &App, admin: &str, totals: &Totals) -> Result<(), String> {
    let s = app
        .call(
            Method::GET,
            "/api/analytics/summary?minutes=120",
            Some(admin),
            None,
        )
        .await;
    let t = &s.body["totals"];
    let got = (
        t["views"].as_i64(),
        t["basket_adds"].as_i64(),
        t["purchases"].as_i64(),
        t["units"].as_i64(),
    );
    let want = (
        Some(totals.views),
        Some(totals.adds),
        Some(totals.purchases),
        Some(totals.units),
    );
    if got != want {
        return Err(format!("counters {got:?}, expected {want:?}"));
    }
    for (p, net) in &totals.net {
        let (on_hand, backorder) = on_hand(app, p).await;
        if on_hand - backorder != *net {
            return Err(format!(
                "{p}: on_hand {on_hand} backorder {backorder}, expected net {net}"
            ));
        }
    }
    Ok(())
}

/// `pause_ms`: how long each run lives before SIGKILL, at least.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Log,
    /// A 4-shard Kinesis stream.
    Kinesis,
    /// A 4-partition Kafka topic.
    Kafka,
}

async fn crash_and_restart(
    backend: Backend,
    stream: Stream,
    events: usize,
    kills: usize,
    pause_ms: u64,
) {
    let mut env = Env::new(backend)
        .set("SHOPSTREAM_CONSUMER_BATCH", "200")
        .set("SHOPSTREAM_LEASE_FAILOVER_SECS", "2");
    match stream {
        Stream::Log => {}
        Stream::Kinesis => env = env.kinesis(4),
        Stream::Kafka => env = env.kafka(4).set("SHOPSTREAM_CONSUMER_BATCH", "50"),
    }
    let (file, totals) = generate(events, 40);
    let path = env.dir.path().join("events.jsonl");
    let resend = env.dir.path().join("resend.jsonl");
    let lines: Vec<&str> = file.lines().collect();
    std::fs::write(
        &resend,
        lines[lines.len().saturating_sub(1000)..].join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(&path, file).unwrap();
    if backend == Backend::Aws || stream != Stream::Log {
        let (code, out, err) = env.run(&["init"]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let out = env.produce(&path, 1000).await;
    assert!(out.contains(&format!("sent {events}, failed 0")), "{out}");

    let mut seed = 12345u64;
    for k in 0..kills {
        let app = env.start().await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pause = pause_ms + (seed >> 33) % 600;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let admin = app.admin_token().await;
        let progress = app
            .call(
                Method::GET,
                "/api/analytics/summary?minutes=120",
                Some(&admin),
                None,
            )
            .await;
        eprintln!(
            "kill {k} after {pause} ms: views so far {}",
            progress.body["totals"]["views"]
        );
        app.kill().await;
        if k == 0 {
            // The producer re-sends its last batch (as after a lost
            // acknowledgement): the same ids, applied no more.
            let (code, out, err) = env
                .run(&["produce", "--file", resend.to_str().unwrap()])
                .await;
            assert_eq!(code, 0, "{out}{err}");
        }
    }
    let app = env.start().await;
    let admin = app.admin_token().await;
    for _ in 0..300 {
        if verify(&app, &admin, &totals).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = verify(&app, &admin, &totals).await {
        let leases = app
            .call(Method::GET, "/api/admin/leases", Some(&admin), None)
            .await;
        panic!("totals not exact after 30 s: {e}; leases {}", leases.body);
    }
    // Still exact a moment later: nothing is applied twice after catching up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    verify(&app, &admin, &totals).await.unwrap();
    let dead = app
        .call(
            Method::GET,
            "/api/admin/dead-letters?limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert!(dead.body["items"].as_array().unwrap().len() as i64 >= totals.bad.min(100));
    app.stop().await;
}

#[tokio::test]
async fn crash_test_embedded_20000_events_5_kills() {
    crash_and_restart(Backend::Embedded, Stream::Log, 20_000, 5, 150).await;
}

#[tokio::test]
async fn crash_test_dynamodb_log_600_events_3_kills() {
    // Each process has its own lease owner id on AWS, so a restarted one
    // waits out the failover time (2 s here) before it takes the shards.
    crash_and_restart(Backend::Aws, Stream::Log, 600, 3, 2_500).await;
}

#[tokio::test]
async fn crash_test_kinesis_20000_events_5_kills() {
    crash_and_restart(Backend::Embedded, Stream::Kinesis, 20_000, 5, 400).await;
}

#[tokio::test]
async fn crash_test_kinesis_to_dynamodb_600_events_3_kills() {
    crash_and_restart(Backend::Aws, Stream::Kinesis, 600, 3, 2_500).await;
}

#[tokio::test]
async fn crash_test_kafka_20000_events_5_kills() {
    // A SIGKILLed member stays in the group until its session times out
    // (6 s here), so each run lives long enough for the group to settle and
    // reads in small batches, to be killed mid-stream.
    crash_and_restart(Backend::Embedded, Stream::Kafka, 20_000, 5, 7_000).await;
}

/// RetailRocket rows imported with the CLI onto a Kinesis stream, and an
/// event posted to the collector, are applied by the server reading it.
#[tokio::test]
async fn import_retailrocket_and_collector_through_kinesis() {
    let env = Env::new(Backend::Embedded).kinesis(2);
    let (code, out, err) = env.run(&["init"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let app = env.start().await;
    let admin = app.admin_token().await;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut csv = String::from("timestamp,visitorid,event,itemid,transactionid\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "{},{},view,{},\n",
            now_ms - 5000 + i,
            100 + i % 4,
            7 + i % 3
        ));
    }
    for i in 0..5 {
        csv.push_str(&format!("{},{},addtocart,7,\n", now_ms - 3000 + i, 100 + i));
    }
    csv.push_str(&format!("{},100,transaction,7,900\n", now_ms - 1000));
    csv.push_str(&format!("{},100,transaction,8,900\n", now_ms - 1000));
    csv.push_str("not,a,row\n");
    let path = env.dir.path().join("events.csv");
    std::fs::write(&path, csv).unwrap();
    let (code, out, err) = env
        .run(&["import", "--format", "retailrocket", path.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent 36, failed 0"), "{out}");
    assert!(err.contains("skipped 1"), "{err}");
    // And one view through the HTTP collector, published to Kinesis.
    let posted = app
        .call(
            Method::POST,
            "/api/events",
            Some(&admin),
            Some(json!([envelope(
                "browse.viewed",
                json!({"session_id": "web-1", "product_id": "7"})
            )])),
        )
        .await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{}", posted.body);
    eventually("the imported events applied", || async {
        let s = app
            .call(
                Method::GET,
                "/api/analytics/summary?minutes=60",
                Some(&admin),
                None,
            )
            .await;
        let t = &s.body["totals"];
        let got = (
            t["views"].as_i64(),
            t["basket_adds"].as_i64(),
            t["purchases"].as_i64(),
            t["units"].as_i64(),
        );
        if got == (Some(31), Some(5), Some(1), Some(2)) {
            Ok(())
        } else {
            Err(format!("totals {got:?}"))
        }
    })
    .await;
    app.stop().await;
}
