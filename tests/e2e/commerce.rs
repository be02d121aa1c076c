//! Baskets, checkout, payment, orders and notifications, end to end on the
//! real binary, on both backends.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{App, Backend, Env, adjust, create_product, eventually, metric, post_events},
    on_both_backends,
};

const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";
const ERROR: &str = "4000000000000119";
const SLOW: &str = "4000000000000259";

/// Creates a product with `stock` units available (through the stream, as
/// a warehouse would) and returns its id.
async fn stocked(app: &App, admin: &str, sku: &str, stock: i64) -> String {
    let id = create_product(app, admin, sku).await;
    if stock != 0 {
        post_events(app, admin, json!([adjust(&id, stock)])).await;
        eventually("the stock to arrive", || async {
            let s = stock_of(app, &id).await;
            (s.2 == stock).then_some(()).ok_or(format!("{s:?}"))
        })
        .await;
    }
    id
}

/// (on_hand, reserved, available)
async fn stock_of(app: &App, id: &str) -> (i64, i64, i64) {
    let r = app.get(&format!("/api/inventory/{id}")).await;
    (
        r.body["on_hand"].as_i64().unwrap_or(i64::MIN),
        r.body["reserved"].as_i64().unwrap_or(i64::MIN),
        r.body["available"].as_i64().unwrap_or(i64::MIN),
    )
}

async fn add(app: &App, token: &str, id: &str, quantity: i64) -> crate::helpers::Reply {
    app.call(
        Method::POST,
        "/api/basket/items",
        Some(token),
        Some(json!({"product_id": id, "quantity": quantity})),
    )
    .await
}

async fn checkout(app: &App, token: &str, key: &str, card: &str) -> crate::helpers::Reply {
    app.send(
        app.http
            .post(app.url("/api/checkout"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"card_number": card})),
    )
    .await
}

/// 50 customers race for 10 units: exactly 10 paid orders, never a negative.
async fn fifty_checkouts_race_for_ten_units(backend: Backend) {
    let app = Env::new(backend).start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "RACE-1", 10).await;
    let mut tokens = Vec::new();
    for i in 0..50 {
        let (t, _, _) = app.customer(&format!("racer{i}@example.com")).await;
        let r = add(&app, &t, &id, 1).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        tokens.push(t);
    }
    let replies = join_all(tokens.iter().enumerate().map(|(i, t)| {
        let app = &app;
        async move { checkout(app, t, &format!("race-{i}"), APPROVE).await }
    }))
    .await;
    let paid = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED && r.body["status"] == "paid")
        .count();
    let short: Vec<&crate::helpers::Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .collect();
    assert_eq!(
        paid,
        10,
        "{:?}",
        replies
            .iter()
            .map(|r| (r.status, r.text.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(short.len(), 40);
    for r in &short {
        assert_eq!(r.body["type"], "/problems/out-of-stock");
        assert_eq!(r.body["shortages"][0]["product_id"], id.as_str());
        assert_eq!(r.body["shortages"][0]["requested"], 1);
        assert!(r.body["shortages"][0]["available"].as_i64().unwrap() >= 0);
    }
    assert_eq!(stock_of(&app, &id).await, (0, 0, 0));
    let r = app
        .call(
            Method::GET,
            "/api/admin/orders?status=paid&limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 10, "{}", r.text);
    // The purchases reach the pipeline, which counts them but leaves the
    // stock alone (the checkout already took it).
    eventually("the purchases to be counted", || async {
        let r = app
            .call(
                Method::GET,
                &format!("/api/analytics/products/{id}"),
                Some(&admin),
                None,
            )
            .await;
        let units = r.body["totals"]["units"].as_i64().unwrap_or(-1);
        (units == 10).then_some(()).ok_or(r.text.clone())
    })
    .await;
    assert_eq!(stock_of(&app, &id).await, (0, 0, 0));
    app.stop().await;
}

/// One key, five concurrent retries: one order, one charge; the same key
/// with another body is refused.
async fn idempotent_checkout(backend: Backend) {
    let app = Env::new(backend).start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "IDEM-1", 5).await;
    let (t, _, _) = app.customer("idem@example.com").await;
    add(&app, &t, &id, 2).await;
    let replies = join_all((0..5).map(|_| checkout(&app, &t, "key-1", APPROVE))).await;
    let first = replies[0].body["id"].as_str().unwrap().to_owned();
    for r in &replies {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["id"], first.as_str());
        assert_eq!(r.body["status"], "paid");
    }
    assert_eq!(metric(&app, "shopstream_payments_charged_total").await, 1.0);
    assert_eq!(stock_of(&app, &id).await, (3, 0, 3));
    // Later retries too.
    let again = checkout(&app, &t, "key-1", APPROVE).await;
    assert_eq!(again.body["id"], first.as_str());
    let other = checkout(&app, &t, "key-1", "5555555555554444").await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert_eq!(other.problem_fields(), ["Idempotency-Key"]);
    let missing = app
        .send(
            app.http
                .post(app.url("/api/checkout"))
                .bearer_auth(&t)
                .json(&json!({"card_number": APPROVE})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.problem_fields(), ["Idempotency-Key"]);
    let bad_card = checkout(&app, &t, "key-2", "4242424242424241").await;
    assert_eq!(bad_card.problem_fields(), ["card_number"]);
    // The paid order emptied the basket.
    let r = checkout(&app, &t, "key-3", APPROVE).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.problem_fields(), ["basket"]);
    app.stop().await;
}

/// Declines and processor errors release the reservation and keep the
/// basket; a timeout does too.
async fn failed_payments_release_stock(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_PAYMENT_TIMEOUT_MS", "1000")
        .set("SHOPSTREAM_PAYMENT_SLOW_MS", "5000")
        .start()
        .await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "DECL-1", 4).await;
    let (t, _, _) = app.customer("decline@example.com").await;
    add(&app, &t, &id, 3).await;
    for (key, card, status, outcome) in [
        ("d", DECLINE, StatusCode::PAYMENT_REQUIRED, "declined"),
        ("e", ERROR, StatusCode::BAD_GATEWAY, "processor_error"),
        ("s", SLOW, StatusCode::GATEWAY_TIMEOUT, "timeout"),
    ] {
        let r = checkout(&app, &t, key, card).await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.body["type"], "/problems/payment-failed");
        let order = r.body["order_id"].as_str().unwrap();
        let o = app
            .call(Method::GET, &format!("/api/orders/{order}"), Some(&t), None)
            .await;
        assert_eq!(o.body["status"], "payment_failed", "{}", o.text);
        assert_eq!(o.body["payment"]["outcome"], outcome);
        assert_eq!(o.body["payment"]["card_last4"], &card[12..]);
        assert_eq!(stock_of(&app, &id).await, (4, 0, 4), "after {outcome}");
        let b = app.call(Method::GET, "/api/basket", Some(&t), None).await;
        assert_eq!(b.body["items"], 3, "{}", b.text);
        // The retry answers the same.
        assert_eq!(checkout(&app, &t, key, card).await.status, status);
    }
    assert_eq!(
        metric(
            &app,
            "shopstream_payments_charged_total{provider=\"simulated\",outcome=\"approved\"}"
        )
        .await,
        0.0
    );
    // A short line is named with what is available.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/basket/items/{id}"),
            Some(&t),
            Some(json!({"quantity": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["lines"][0]["in_stock"], false);
    let r = checkout(&app, &t, "short", APPROVE).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(
        r.body["shortages"],
        json!([{"product_id": id, "requested": 5, "available": 4}])
    );
    app.stop().await;
}

/// A server killed while the payment is in flight leaves the stock
/// reserved only until the reservation expires.
async fn killed_checkout_reservation_expires(backend: Backend) {
    let env = Env::new(backend)
        .set("SHOPSTREAM_RESERVATION_TTL_SECS", "3")
        .set("SHOPSTREAM_RESERVATION_SWEEP_SECS", "1")
        .set("SHOPSTREAM_PAYMENT_SLOW_MS", "60000")
        .set("SHOPSTREAM_PAYMENT_TIMEOUT_MS", "120000");
    let app = env.start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "KILL-1", 6).await;
    let (t, _, _) = app.customer("killed@example.com").await;
    add(&app, &t, &id, 2).await;
    let pending = {
        let req = app
            .http
            .post(app.url("/api/checkout"))
            .bearer_auth(&t)
            .header("Idempotency-Key", "k")
            .json(&json!({"card_number": SLOW}));
        tokio::spawn(req.send())
    };
    eventually("the reservation", || async {
        let s = stock_of(&app, &id).await;
        (s == (6, 2, 4)).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    app.kill().await;
    assert!(
        pending.await.unwrap().is_err(),
        "the request died with the server"
    );
    let app = env.start().await;
    eventually("the expired reservation to be released", || async {
        let s = stock_of(&app, &id).await;
        (s == (6, 0, 6)).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    let r = app.call(Method::GET, "/api/orders", Some(&t), None).await;
    assert_eq!(r.body["items"][0]["status"], "cancelled", "{}", r.text);
    app.stop().await;
}

async fn place(app: &App, token: &str, id: &str) -> String {
    add(app, token, id, 2).await;
    let r = checkout(app, token, &uuid::Uuid::new_v4().to_string(), APPROVE).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn status(app: &App, order: &str, body: Value, token: &str) -> crate::helpers::Reply {
    app.call(
        Method::POST,
        &format!("/api/orders/{order}/status"),
        Some(token),
        Some(body),
    )
    .await
}

/// Every transition of the state machine, valid and invalid, with stock
/// effects, history, and who may do what.
async fn order_state_machine_and_ownership(backend: Backend) {
    let app = Env::new(backend).start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "FSM-1", 20).await;
    let (alice, _, _) = app.customer("alice@example.com").await;
    let (bob, _, _) = app.customer("bob@example.com").await;

    // paid → packed → shipped → delivered → refunded (no restock).
    let o = place(&app, &alice, &id).await;
    assert_eq!(stock_of(&app, &id).await, (18, 0, 18));
    let invalid = status(&app, &o, json!({"status": "delivered"}), &admin).await;
    assert_eq!(invalid.status, StatusCode::CONFLICT, "{}", invalid.text);
    assert_eq!(
        status(&app, &o, json!({"status": "packed"}), &admin)
            .await
            .status,
        StatusCode::OK
    );
    let no_tracking = status(&app, &o, json!({"status": "shipped"}), &admin).await;
    assert_eq!(no_tracking.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_tracking.problem_fields(), ["tracking_number"]);
    let shipped = status(
        &app,
        &o,
        json!({"status": "shipped", "carrier": "DHL", "tracking_number": "JD0001"}),
        &admin,
    )
    .await;
    assert_eq!(shipped.status, StatusCode::OK, "{}", shipped.text);
    assert_eq!(shipped.body["shipment"]["tracking_number"], "JD0001");
    let cancel_late = app
        .call(
            Method::POST,
            &format!("/api/orders/{o}/cancel"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        cancel_late.status,
        StatusCode::CONFLICT,
        "{}",
        cancel_late.text
    );
    assert_eq!(
        status(&app, &o, json!({"status": "delivered"}), &admin)
            .await
            .status,
        StatusCode::OK
    );
    let refunded = status(
        &app,
        &o,
        json!({"status": "refunded", "note": "damaged"}),
        &admin,
    )
    .await;
    assert_eq!(refunded.status, StatusCode::OK);
    let history: Vec<&str> = refunded.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "pending_payment",
            "paid",
            "packed",
            "shipped",
            "delivered",
            "refunded"
        ]
    );
    assert_eq!(
        refunded.body["history"][5]["actor"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("admin")
    );
    assert_eq!(
        stock_of(&app, &id).await,
        (18, 0, 18),
        "shipped goods are not restocked"
    );
    for to in ["paid", "packed", "cancelled", "pending_payment"] {
        let r = status(&app, &o, json!({"status": to}), &admin).await;
        assert!(
            matches!(
                r.status,
                StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY
            ),
            "refunded → {to}: {}",
            r.text
        );
    }
    assert_eq!(
        status(&app, &o, json!({"status": "lost"}), &admin)
            .await
            .problem_fields(),
        ["status"]
    );

    // The customer cancels a paid order: restocked.
    let o2 = place(&app, &alice, &id).await;
    assert_eq!(stock_of(&app, &id).await, (16, 0, 16));
    let c = app
        .call(
            Method::POST,
            &format!("/api/orders/{o2}/cancel"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(c.body["status"], "cancelled");
    assert_eq!(stock_of(&app, &id).await, (18, 0, 18));

    // Packed then refunded: restocked.
    let o3 = place(&app, &alice, &id).await;
    status(&app, &o3, json!({"status": "packed"}), &admin).await;
    assert_eq!(
        status(&app, &o3, json!({"status": "refunded"}), &admin)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(stock_of(&app, &id).await, (18, 0, 18));

    // Bob sees none of Alice's orders and cannot touch them.
    for r in [
        app.call(Method::GET, &format!("/api/orders/{o}"), Some(&bob), None)
            .await,
        app.call(
            Method::POST,
            &format!("/api/orders/{o3}/cancel"),
            Some(&bob),
            None,
        )
        .await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    }
    let forbidden = status(&app, &o3, json!({"status": "packed"}), &alice).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let bobs = app.call(Method::GET, "/api/orders", Some(&bob), None).await;
    assert_eq!(bobs.body["items"], json!([]));
    let alices = app
        .call(Method::GET, "/api/orders?limit=2", Some(&alice), None)
        .await;
    let ids: Vec<&str> = alices.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [o3.as_str(), o2.as_str()], "newest first");
    let next = alices.body["next_cursor"].as_str().unwrap();
    let rest = app
        .call(
            Method::GET,
            &format!("/api/orders?limit=2&cursor={next}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(rest.body["items"][0]["id"], o.as_str());
    assert_eq!(
        app.call(Method::GET, "/api/admin/orders", Some(&alice), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let refunded = app
        .call(
            Method::GET,
            "/api/admin/orders?status=refunded",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        refunded.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        refunded.text
    );
    app.stop().await;
}

/// Anonymous baskets get a session from the API and merge into the user's
/// basket on login; bad input is named.
async fn baskets(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_MAX_QUANTITY", "10")
        .start()
        .await;
    let admin = app.admin_token().await;
    let a = stocked(&app, &admin, "BSK-A", 3).await;
    let b = stocked(&app, &admin, "BSK-B", 0).await;
    let r = app.get("/api/basket").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["lines"], json!([]));
    let session = r.header("x-session-id").unwrap().to_owned();
    assert!(r.header("set-cookie").unwrap().contains(&session));
    let anon = |req: reqwest::RequestBuilder| req.header("x-session-id", &session);
    let r = app
        .send(
            anon(app.http.post(app.url("/api/basket/items")))
                .json(&json!({"product_id": a, "quantity": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.header("x-session-id"),
        None,
        "the session is kept, not reissued"
    );
    let r = app
        .send(
            anon(app.http.post(app.url("/api/basket/items")))
                .json(&json!({"product_id": b, "quantity": 1})),
        )
        .await;
    assert_eq!(r.body["lines"][1]["in_stock"], false);
    assert_eq!(r.body["total"], "59.97");
    assert_eq!(r.body["items"], 3);
    for (body, field) in [
        (json!({"product_id": a, "quantity": 0}), "quantity"),
        (json!({"product_id": a, "quantity": 11}), "quantity"),
        (
            json!({"product_id": uuid::Uuid::now_v7(), "quantity": 1}),
            "product_id",
        ),
        (json!({"product_id": "nope", "quantity": 1}), "product_id"),
        (json!({"product_id": a, "quantity": "2"}), "quantity"),
        (
            json!({"product_id": a, "quantity": 1, "colour": "red"}),
            "colour",
        ),
    ] {
        let r = app
            .send(anon(app.http.post(app.url("/api/basket/items"))).json(&body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(r.problem_fields(), [field], "{body}");
    }
    // 2 + 9 > 10.
    let r = app
        .send(
            anon(app.http.post(app.url("/api/basket/items")))
                .json(&json!({"product_id": a, "quantity": 9})),
        )
        .await;
    assert_eq!(r.problem_fields(), ["quantity"]);
    let forged = app
        .send(
            app.http
                .get(app.url("/api/basket"))
                .header("x-session-id", "someone-else"),
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Log in: the session's basket merges into the user's (capped).
    let (t, _, _) = app.customer("basket@example.com").await;
    add(&app, &t, &a, 9).await;
    let login = app
        .send(
            app.http
                .post(app.url("/api/auth/login"))
                .header("x-session-id", &session)
                .json(
                    &json!({"email": "basket@example.com", "password": "a long enough password"}),
                ),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let t = login.body["access_token"].as_str().unwrap().to_owned();
    let r = app.call(Method::GET, "/api/basket", Some(&t), None).await;
    let lines: Vec<(String, i64)> = r.body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["product_id"].as_str().unwrap().to_owned(),
                l["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [(a.clone(), 10), (b.clone(), 1)], "{}", r.text);
    let r = app.send(anon(app.http.get(app.url("/api/basket")))).await;
    assert_eq!(r.body["lines"], json!([]), "the session's basket moved");
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/basket/items/{b}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.body["items"], 10);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/basket/items/{b}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::DELETE, "/api/basket", Some(&t), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::GET, "/api/basket", Some(&t), None)
            .await
            .body["items"],
        0
    );
    // A deleted product cannot be added.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/products/{b}"),
            Some(&admin),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(add(&app, &t, &b, 1).await.problem_fields(), ["product_id"]);
    app.stop().await;
}

/// A paid order yields one confirmation, delivered once, even when the
/// server is killed right after the checkout answered.
async fn one_confirmation_across_a_crash(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "NOTE-1", 5).await;
    let (t, _, _) = app.customer("notes@example.com").await;
    add(&app, &t, &id, 1).await;
    let r = checkout(&app, &t, "n1", APPROVE).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let order = r.body["id"].as_str().unwrap().to_owned();
    app.kill().await;
    let app = env.start().await;
    let dir = env.data_dir().join("notifications");
    let confirmations = || -> Vec<Value> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .filter_map(|e| {
                        serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok()
                    })
                    .filter(|n| {
                        n["order_id"] == order.as_str() && n["kind"] == "order_confirmation"
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually("the confirmation", || async {
        (confirmations().len() == 1)
            .then_some(())
            .ok_or("none yet".into())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = confirmations();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["to"], "notes@example.com");
    assert!(c[0]["body"].as_str().unwrap().contains("19.99"));
    app.stop().await;
}

on_both_backends!(
    fifty_checkouts_race_for_ten_units,
    idempotent_checkout,
    failed_payments_release_stock,
    killed_checkout_reservation_expires,
    order_state_machine_and_ownership,
    baskets,
    one_confirmation_across_a_crash,
    product_images,
);

/// Product images: checked by content, size-limited, served with caching.
async fn product_images(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_IMAGE_MAX_BYTES", "100000")
        .start()
        .await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "IMG-1", 0).await;
    let put = |body: Vec<u8>, token: String| {
        let req = app
            .http
            .put(app.url(&format!("/api/products/{id}/image")))
            .bearer_auth(token)
            .header("content-type", "image/png")
            .body(body);
        app.send(req)
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(std::iter::repeat_n(7u8, 70_000));
    let r = put(png.clone(), admin.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let url = r.body["image_url"].as_str().unwrap().to_owned();
    let got = app.http.get(app.url(&url)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert!(
        got.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let etag = got.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(got.bytes().await.unwrap().len(), png.len());
    let again = app
        .http
        .get(app.url(&url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    // A GIF named PNG, a script, an empty body: 415. Too big: 413.
    for bad in [
        b"GIF89a....".to_vec(),
        b"<script>alert(1)</script>".to_vec(),
        Vec::new(),
    ] {
        let r = put(bad, admin.clone()).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let mut big = b"\xFF\xD8\xFF".to_vec();
    big.extend(std::iter::repeat_n(0u8, 100_001));
    assert_eq!(
        put(big, admin.clone()).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let (customer, _, _) = app.customer("img@example.com").await;
    assert_eq!(put(png, customer).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get(&format!("/api/products/{}/image", uuid::Uuid::now_v7()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

/// Calls one of moto's query APIs (SES, SNS): moto needs no signature, only
/// the service in the credential scope. Answers the response body.
pub(crate) async fn moto_query(service: &str, body: &str) -> String {
    let r = reqwest::Client::new()
        .post(crate::helpers::dynamodb_endpoint())
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=test/20261124/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let ok = r.status().is_success();
    let text = r.text().await.unwrap();
    assert!(ok, "{text}");
    text
}

/// Everything moto holds, per service and model (`/moto-api/data.json`).
pub(crate) async fn moto_data() -> Value {
    reqwest::get(format!(
        "{}/moto-api/data.json",
        crate::helpers::dynamodb_endpoint()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// Verifies `sender` as an SES identity in moto.
pub(crate) async fn verify_ses_sender(sender: &str) {
    moto_query(
        "ses",
        &format!(
            "Action=VerifyEmailIdentity&Version=2010-12-01&EmailAddress={}",
            sender.replace('@', "%40")
        ),
    )
    .await;
}

/// Every message SES in moto sent, as JSON, that contains each of `words`.
pub(crate) async fn ses_sent(words: &[&str]) -> usize {
    moto_data().await["ses"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|v| v.as_array())
        .flatten()
        .filter(|m| {
            let m = m.to_string();
            words.iter().all(|w| m.contains(w))
        })
        .count()
}

/// Creates an SNS topic in moto; returns its ARN.
pub(crate) async fn create_sns_topic(name: &str) -> String {
    let created = moto_query(
        "sns",
        &format!("Action=CreateTopic&Version=2010-03-31&Name={name}"),
    )
    .await;
    created
        .split("<TopicArn>")
        .nth(1)
        .and_then(|s| s.split("</TopicArn>").next())
        .unwrap_or_else(|| panic!("no topic created: {created}"))
        .to_owned()
}

/// The messages published to the topic `arn` in moto, as
/// `(message id, message, subject, attributes, group id)`.
pub(crate) async fn sns_published(arn: &str) -> Vec<Value> {
    let topic = moto_data().await["sns"]["Topic"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["arn"] == arn)
        .cloned()
        .unwrap_or_default();
    topic["sent_notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// AWS mode with SES notifications and images in S3, both in moto.
#[tokio::test]
async fn ses_notifications_and_s3_images() {
    let moto = crate::helpers::dynamodb_endpoint();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let sender = format!("shop-{suffix}@example.com");
    verify_ses_sender(&sender).await;
    let http = reqwest::Client::new();
    let bucket = format!("images-{suffix}");
    let env = Env::new(Backend::Aws)
        .set("SHOPSTREAM_NOTIFIER", "ses")
        .set("SHOPSTREAM_SES_FROM", &sender)
        .set("SHOPSTREAM_IMAGES_BUCKET", &bucket);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "SES-1", 3).await;

    let mut webp = b"RIFF\x24\0\0\0WEBPVP8 ".to_vec();
    webp.extend(std::iter::repeat_n(3u8, 5000));
    let r = app
        .send(
            app.http
                .put(app.url(&format!("/api/products/{id}/image")))
                .bearer_auth(&admin)
                .body(webp.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let got = app
        .http
        .get(app.url(r.body["image_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], "image/webp");
    assert_eq!(got.bytes().await.unwrap().to_vec(), webp);
    // The object is in the bucket, not on disk.
    let listing = http
        .get(format!("{moto}/{bucket}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains(&format!("images/{id}")), "{listing}");
    assert!(!env.data_dir().join("images").exists());

    let email = format!("buyer-{suffix}@example.com");
    let (t, _, _) = app.customer(&email).await;
    add(&app, &t, &id, 1).await;
    let r = checkout(&app, &t, "ses", APPROVE).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let order = r.body["id"].as_str().unwrap().to_owned();
    let words = [email.as_str(), order.as_str()];
    let sent = || ses_sent(&words);
    eventually("the confirmation e-mail", || async {
        let n = sent().await;
        (n >= 1).then_some(()).ok_or(format!("{n} sent"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sent().await, 1, "exactly one confirmation");
    app.stop().await;
}

/// AWS mode with notifications published to an SNS topic in moto: exactly
/// one confirmation per paid order.
#[tokio::test]
async fn sns_notifications() {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let arn = create_sns_topic(&format!("orders-{suffix}")).await;
    let env = Env::new(Backend::Aws)
        .set("SHOPSTREAM_NOTIFIER", "sns")
        .set("SHOPSTREAM_SNS_TOPIC_ARN", &arn);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let id = stocked(&app, &admin, "SNS-1", 3).await;
    let email = format!("buyer-{suffix}@example.com");
    let (t, _, _) = app.customer(&email).await;
    add(&app, &t, &id, 1).await;
    let r = checkout(&app, &t, "sns", APPROVE).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let order = r.body["id"].as_str().unwrap().to_owned();
    let published = || async {
        sns_published(&arn)
            .await
            .iter()
            .filter(|m| {
                // (message id, message, subject, attributes, group id)
                let message: Value =
                    serde_json::from_str(m[1].as_str().unwrap_or("{}")).unwrap_or_default();
                message["order_id"] == order.as_str()
                    && message["kind"] == "order_confirmation"
                    && message["to"] == email.as_str()
                    && m[2].as_str().is_some_and(|s| !s.is_empty())
            })
            .count()
    };
    eventually("the confirmation on the topic", || async {
        let n = published().await;
        (n >= 1).then_some(()).ok_or(format!("{n} published"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(published().await, 1, "exactly one confirmation");
    app.stop().await;
}
