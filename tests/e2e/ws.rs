//! The websocket hub, end to end: live stock, slow clients, limits, and
//! who sees which orders and alerts.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::{
    helpers::{
        App, Backend, Env, adjust, create_product, eventually, eventually_within, metric,
        post_events,
    },
    on_both_backends,
};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A connection, signed in with `token` by its first message (the token is
/// never in the URL).
pub(crate) async fn connect(app: &App, token: Option<&str>) -> Ws {
    let base = app.base.replace("http://", "ws://");
    let mut ws = connect_async(format!("{base}/ws"))
        .await
        .expect("websocket handshake")
        .0;
    if let Some(t) = token {
        send(&mut ws, json!({"op": "auth", "token": t})).await;
        let m = next(&mut ws).await;
        assert_eq!(m["type"], "authenticated", "{m}");
    }
    ws
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message, skipping pings; panics after 20 s.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("no message within 20 s")
}

/// Waits until the first and the last of `ids` show `available` (a batch
/// may be committed in several transactions).
async fn wait_for_level(app: &App, ids: &[String], available: i64) {
    for id in [&ids[0], &ids[ids.len() - 1]] {
        eventually("the stock of every product", || async {
            let r = app.get(&format!("/api/inventory/{id}")).await;
            (r.body["available"] == available)
                .then_some(())
                .ok_or(r.text)
        })
        .await;
    }
}

/// Asserts nothing but pings arrives for a while.
async fn silent(ws: &mut Ws, for_: Duration) {
    let r = tokio::time::timeout(for_, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(r.is_err(), "expected silence, got {r:?}");
}

/// A subscriber gets a snapshot, then every committed change with a
/// growing sequence number — from the stream and from checkout.
async fn stock_changes_reach_subscribers(backend: Backend) {
    let app = Env::new(backend).start().await;
    let admin = app.admin_token().await;
    let id = create_product(&app, &admin, "WS-1").await;
    post_events(&app, &admin, json!([adjust(&id, 5)])).await;
    eventually("stock", || async {
        let r = app.get(&format!("/api/inventory/{id}")).await;
        (r.body["available"] == 5).then_some(()).ok_or(r.text)
    })
    .await;
    let mut ws = connect(&app, None).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "topic": format!("stock:{id}")}),
    )
    .await;
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["seq"], 0);
    assert_eq!(snap["data"]["available"], 5);
    post_events(&app, &admin, json!([adjust(&id, 3)])).await;
    let change = next(&mut ws).await;
    assert_eq!(change["type"], "change");
    assert_eq!(change["topic"], format!("stock:{id}"));
    assert_eq!(change["seq"], 1);
    assert_eq!(change["data"]["available"], 8);
    assert_eq!(change["data"]["on_hand"], 8);
    // A checkout's reservation is pushed too.
    let (t, _, _) = app.customer("ws@example.com").await;
    app.call(
        Method::POST,
        "/api/basket/items",
        Some(&t),
        Some(json!({"product_id": id, "quantity": 2})),
    )
    .await;
    let r = app
        .send(
            app.http
                .post(app.url("/api/checkout"))
                .bearer_auth(&t)
                .header("Idempotency-Key", "ws")
                .json(&json!({"card_number": "4000000000000002"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    // The reservation (available 6) and its release (back to 8) may land
    // in one tick, and then only the release is sent: levels are coalesced.
    let mut frames = Vec::new();
    while frames
        .last()
        .is_none_or(|f: &Value| f["data"]["reserved"] != 0)
    {
        frames.push(next(&mut ws).await);
    }
    let seqs: Vec<_> = frames.iter().filter_map(|f| f["seq"].as_i64()).collect();
    let levels: Vec<_> = frames
        .iter()
        .map(|f| {
            (
                f["data"]["reserved"].as_i64(),
                f["data"]["available"].as_i64(),
            )
        })
        .collect();
    assert!(
        (seqs == [2] && levels == [(Some(0), Some(8))])
            || (seqs == [2, 3] && levels == [(Some(2), Some(6)), (Some(0), Some(8))]),
        "{frames:?}"
    );
    // Other products' changes do not reach a `stock:{id}` subscriber.
    let other = create_product(&app, &admin, "WS-2").await;
    post_events(&app, &admin, json!([adjust(&other, 1)])).await;
    silent(&mut ws, Duration::from_secs(2)).await;
    app.stop().await;
}

/// A client that does not read is cut off with 1013; a fast one keeps
/// receiving.
async fn slow_client_is_cut_off(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_WS_QUEUE", "8")
        .start()
        .await;
    let admin = app.admin_token().await;
    let ids: Vec<String> = (0..300).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    post_events(
        &app,
        &admin,
        Value::Array(ids.iter().map(|id| adjust(id, 1)).collect()),
    )
    .await;
    wait_for_level(&app, &ids, 1).await;
    let mut fast = connect(&app, None).await;
    send(
        &mut fast,
        json!({"op": "subscribe", "topic": format!("stock:{}", ids[0])}),
    )
    .await;
    assert_eq!(next(&mut fast).await["type"], "snapshot");
    let mut slow = connect(&app, None).await;
    // Each subscribe to `stock` answers with a snapshot of every product
    // (~45 KB); this client asks for far more than the socket buffers hold
    // (~250 fill them on loopback) and reads none. Each snapshot is a store
    // query, which on a loaded machine against the DynamoDB emulator can
    // take a good part of a second: the cut-off comes when the buffers are
    // full, however long the snapshots took to get there.
    for _ in 0..1000 {
        send(&mut slow, json!({"op": "subscribe", "topic": "stock"})).await;
    }
    eventually_within(
        "the slow client to be cut off",
        Duration::from_secs(600),
        || async {
            let n = metric(&app, "shopstream_ws_slow_disconnects_total").await;
            (n == 1.0).then_some(()).ok_or(format!("{n}"))
        },
    )
    .await;
    post_events(&app, &admin, json!([adjust(&ids[0], 4)])).await;
    let change = next(&mut fast).await;
    assert_eq!(change["data"]["available"], 5, "{change}");
    // The slow client finds the close frame after what was queued.
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the slow client's stream did not end");
    assert!(matches!(end, Some(1013) | None), "{end:?}");
    app.stop().await;
}

/// A client that stops reading while stock keeps changing is not cut off:
/// its socket is full of snapshots it asked for, the levels changed since
/// wait merged, and when it reads again it gets the latest level of every
/// product, in consecutive frames, fewer levels than there were changes.
/// (The fan-out is the same code on both backends; on the embedded one the
/// snapshot flood is quick.)
#[tokio::test]
async fn a_slow_stock_reader_gets_the_latest_levels_not_a_cut() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_WS_QUEUE", "2000")
        .set("SHOPSTREAM_LIMIT_WS_SNAPSHOTS_PER_MINUTE", "0")
        // The client answers no ping while it is not reading.
        .set("SHOPSTREAM_WS_PING_SECS", "600")
        .start()
        .await;
    let admin = app.admin_token().await;
    let ids: Vec<String> = (0..300).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let round = || Value::Array(ids.iter().map(|id| adjust(id, 1)).collect());
    post_events(&app, &admin, round()).await;
    wait_for_level(&app, &ids, 1).await;
    let mut slow = connect(&app, None).await;
    // 1,000 snapshots of 300 levels (~45 MB): far more than the socket
    // buffers hold, so the server cannot write while the client reads none.
    for _ in 0..1000 {
        send(&mut slow, json!({"op": "subscribe", "topic": "stock"})).await;
    }
    eventually_within(
        "the 1,000 snapshots to be queued",
        Duration::from_secs(600),
        || async {
            let n = metric(&app, "shopstream_ws_snapshots_total").await;
            (n >= 1000.0).then_some(()).ok_or(format!("{n}"))
        },
    )
    .await;
    // 20 more changes to each product: 6,000 changes.
    let rounds = 20;
    for _ in 0..rounds {
        post_events(&app, &admin, round()).await;
    }
    let last = i64::from(rounds) + 1;
    wait_for_level(&app, &ids, last).await;
    // Now read: the snapshots, then the merged levels.
    let (mut snapshots, mut frames, mut levels) = (0, 0, 0);
    let mut latest: std::collections::HashMap<String, i64> = Default::default();
    let mut seq = 0;
    while latest.len() < ids.len() || latest.values().any(|l| *l != last) {
        let m = next(&mut slow).await;
        if m["type"] == "snapshot" {
            snapshots += 1;
            continue;
        }
        assert_eq!(
            (m["type"].as_str(), m["topic"].as_str()),
            (Some("change"), Some("stock")),
            "{m}"
        );
        assert_eq!(snapshots, 1000, "the snapshots come first");
        seq += 1;
        assert_eq!(m["seq"], seq, "consecutive frames");
        frames += 1;
        for item in m["data"].as_array().expect("a list of levels") {
            let (id, level) = (
                item["product_id"].as_str().unwrap(),
                item["available"].as_i64().unwrap(),
            );
            let before = latest.insert(id.to_owned(), level);
            assert!(
                before.is_none_or(|b| b < level),
                "levels only go forward: {item}"
            );
            levels += 1;
        }
    }
    let changes = ids.len() * rounds as usize;
    assert!(
        levels < changes / 2,
        "stale levels are skipped: {levels} levels in {frames} frames for {changes} changes"
    );
    assert_eq!(
        metric(&app, "shopstream_ws_slow_disconnects_total").await,
        0.0
    );
    app.stop().await;
}

/// Origins, malformed messages, auth and limits.
async fn rules_and_limits(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_WS_MAX_SUBSCRIPTIONS", "2")
        .set("SHOPSTREAM_WS_MAX_CONNECTIONS_PER_USER", "1")
        .start()
        .await;
    let admin = app.admin_token().await;
    // A foreign origin is refused; the server's own is fine.
    let base = app.base.replace("http://", "ws://");
    let mut req = format!("{base}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("https://evil.example"));
    let err = connect_async(req)
        .await
        .expect_err("foreign origin accepted");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        e => panic!("{e}"),
    }
    let mut req = format!("{base}/ws").into_client_request().unwrap();
    let own = app.base.clone();
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&own).unwrap());
    connect_async(req).await.expect("own origin refused");

    let mut ws = connect(&app, None).await;
    for bad in [
        json!("hello").to_string(),
        "{not json".to_owned(),
        json!({"op": "dance"}).to_string(),
    ] {
        ws.send(Message::Text(bad.into())).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "error");
    }
    for topic in [
        "analytics",
        "alerts",
        "orders",
        "stock:not-a-uuid",
        "weather",
    ] {
        send(&mut ws, json!({"op": "subscribe", "topic": topic})).await;
        let m = next(&mut ws).await;
        assert_eq!(m["type"], "error", "{topic}: {m}");
    }
    // Authenticating in a message opens the admin topics.
    send(&mut ws, json!({"op": "auth", "token": admin})).await;
    assert_eq!(next(&mut ws).await["role"], "admin");
    send(&mut ws, json!({"op": "subscribe", "topic": "analytics"})).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    send(&mut ws, json!({"op": "subscribe", "topic": "stock"})).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    send(&mut ws, json!({"op": "subscribe", "topic": "orders"})).await;
    let m = next(&mut ws).await;
    assert!(m["message"].as_str().unwrap().contains("at most 2"), "{m}");
    send(&mut ws, json!({"op": "unsubscribe", "topic": "stock"})).await;
    assert_eq!(next(&mut ws).await["type"], "unsubscribed");
    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    // One connection per user here: a second one is closed when it signs in.
    let mut second = connect(&app, None).await;
    send(&mut second, json!({"op": "auth", "token": admin})).await;
    match tokio::time::timeout(Duration::from_secs(20), second.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => {
            assert_eq!(u16::from(f.code), 1008);
            assert!(f.reason.contains("at most 1"), "{}", f.reason);
        }
        other => panic!("second connection not closed: {other:?}"),
    }
    // A bad token is an error message; the connection stays anonymous.
    let mut bad = connect(&app, None).await;
    send(&mut bad, json!({"op": "auth", "token": "garbage"})).await;
    assert_eq!(next(&mut bad).await["type"], "error");
    // The token is never taken in the URL.
    let err = connect_async(format!("{base}/ws?token={admin}"))
        .await
        .expect_err("a token in the URL was accepted");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 422),
        e => panic!("{e}"),
    }
    app.stop().await;
}

/// Customers see only their own orders; suppliers only their own alerts.
async fn own_orders_and_alerts_only(backend: Backend) {
    let env = Env::new(backend);
    if backend == Backend::Aws {
        let (code, out, err) = env.run(&["init"]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    for (email, supplier) in [("acme@example.com", "acme"), ("other@example.com", "other")] {
        let (code, out, err) = env
            .run(&[
                "user",
                "create",
                "--email",
                email,
                "--password",
                "supplier password 1",
                "--role",
                "supplier",
                "--supplier-id",
                supplier,
            ])
            .await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let app = env.start().await;
    let admin = app.admin_token().await;
    let acme = app
        .login("acme@example.com", "supplier password 1")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app
        .login("other@example.com", "supplier password 1")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The product's supplier is acme; its threshold is 3.
    let id = create_product(&app, &admin, "ALERT-1").await;
    post_events(&app, &admin, json!([adjust(&id, 5)])).await;
    eventually("stock", || async {
        let r = app.get(&format!("/api/inventory/{id}")).await;
        (r.body["available"] == 5).then_some(()).ok_or(r.text)
    })
    .await;
    let (alice, _, _) = app.customer("alice.ws@example.com").await;
    let (bob, _, _) = app.customer("bob.ws@example.com").await;
    let mut socks = Vec::new();
    for (token, topic) in [
        (&alice, "orders"),
        (&bob, "orders"),
        (&acme, "alerts"),
        (&other, "alerts"),
    ] {
        let mut ws = connect(&app, Some(token)).await;
        send(&mut ws, json!({"op": "subscribe", "topic": topic})).await;
        let snap = next(&mut ws).await;
        assert_eq!(snap["data"], json!([]), "{snap}");
        socks.push(ws);
    }
    let [a_ws, b_ws, acme_ws, other_ws] = &mut socks[..] else {
        unreachable!()
    };
    app.call(
        Method::POST,
        "/api/basket/items",
        Some(&alice),
        Some(json!({"product_id": id, "quantity": 3})),
    )
    .await;
    let r = app
        .send(
            app.http
                .post(app.url("/api/checkout"))
                .bearer_auth(&alice)
                .header("Idempotency-Key", "a")
                .json(&json!({"card_number": "4242424242424242"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let order = r.body["id"].as_str().unwrap();
    let m = next(a_ws).await;
    assert_eq!(
        (m["data"]["order_id"].as_str(), m["data"]["status"].as_str()),
        (Some(order), Some("paid")),
        "{m}"
    );
    let alert = next(acme_ws).await;
    assert_eq!(alert["topic"], "alerts");
    assert_eq!(alert["data"]["product_id"], id.as_str());
    assert_eq!(alert["data"]["available"], 2);
    silent(b_ws, Duration::from_secs(1)).await;
    silent(other_ws, Duration::from_secs(1)).await;
    // The same through the API, with acknowledgement.
    let mine = app
        .call(Method::GET, "/api/supplier/alerts", Some(&acme), None)
        .await;
    assert_eq!(
        mine.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        mine.text
    );
    let alert_id = mine.body["items"][0]["id"].as_str().unwrap().to_owned();
    let theirs = app
        .call(Method::GET, "/api/supplier/alerts", Some(&other), None)
        .await;
    assert_eq!(theirs.body["items"], json!([]));
    let stolen = app
        .call(
            Method::POST,
            &format!("/api/supplier/alerts/{alert_id}/ack"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    let ack = app
        .call(
            Method::POST,
            &format!("/api/supplier/alerts/{alert_id}/ack"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(ack.body["acknowledged"], true, "{}", ack.text);
    let products = app
        .call(Method::GET, "/api/supplier/products", Some(&acme), None)
        .await;
    assert_eq!(
        products.body["items"][0]["stock"]["available"], 2,
        "{}",
        products.text
    );
    let none = app
        .call(Method::GET, "/api/supplier/products", Some(&other), None)
        .await;
    assert_eq!(none.body["items"], json!([]));
    assert_eq!(
        app.call(Method::GET, "/api/supplier/alerts", Some(&alice), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    app.stop().await;
}

on_both_backends!(
    stock_changes_reach_subscribers,
    slow_client_is_cut_off,
    rules_and_limits,
    own_orders_and_alerts_only,
);

/// Two instances on one store: a change the first applies reaches the
/// second's subscriber, through the change feed in the store.
#[tokio::test]
async fn another_instances_change_reaches_this_instances_subscriber() {
    let env = Env::new(Backend::Aws);
    let first = env.start().await;
    // The first instance takes the log's four partitions before the second
    // starts, so it applies every event and the second only hears of them.
    let admin = first.admin_token().await;
    eventually("the first instance to hold every partition", || async {
        let r = first
            .call(Method::GET, "/api/admin/leases", Some(&admin), None)
            .await;
        let held = r.body.as_array().map_or(0, |a| {
            a.iter()
                .filter(|l| l["owner"].is_string() && l["expires_at"].as_i64().unwrap_or(0) > 0)
                .count()
        });
        (held == 4).then_some(()).ok_or(r.text)
    })
    .await;
    let second = env.start().await;
    let id = create_product(&first, &admin, "FEED-1").await;
    let mut ws = connect(&second, None).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "topic": format!("stock:{id}")}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    post_events(&first, &admin, json!([adjust(&id, 7)])).await;
    // The product's creation may be applied after the snapshot was read:
    // its change (available 0) can come first, then the adjustment's.
    let mut change = next(&mut ws).await;
    if change["data"]["available"] == 0 {
        change = next(&mut ws).await;
    }
    assert_eq!(change["data"]["available"], 7, "{change}");
    assert!(metric(&second, "shopstream_feed_delivered_total").await >= 1.0);
    assert_eq!(
        metric(&second, "shopstream_events_applied_total").await,
        0.0,
        "the second instance applied nothing itself"
    );
    second.stop().await;
    first.stop().await;
}

/// An event that follows a recommendation is pushed on the `analytics`
/// topic as an attribution tick for the model version it names.
#[tokio::test]
async fn attribution_is_pushed_on_the_analytics_topic() {
    let app = Env::new(Backend::Embedded).start().await;
    let admin = app.admin_token().await;
    let product = create_product(&app, &admin, "ATTR-1").await;
    let mut ws = connect(&app, Some(&admin)).await;
    send(&mut ws, json!({"op": "subscribe", "topic": "analytics"})).await;
    assert_eq!(next(&mut ws).await["type"], "snapshot");
    post_events(
        &app,
        &admin,
        json!([{"type": "browse.viewed", "source": "e2e",
            "data": {"session_id": "s-attr", "product_id": product,
                "recommendation_id": "m42~0193b7c2~sequence"}}]),
    )
    .await;
    let tick = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = next(&mut ws).await;
            if m["type"] == "change" && m["data"]["kind"] == "recommendation_tick" {
                return m;
            }
        }
    })
    .await
    .expect("no attribution tick within 20 s");
    assert_eq!(tick["topic"], "analytics");
    assert_eq!(tick["data"]["model_version"], "m42", "{tick}");
    assert_eq!(tick["data"]["clicks"], 1, "{tick}");
    assert_eq!(tick["data"]["basket_adds"], 0, "{tick}");
    app.stop().await;
}
