//! Limits on every door, on the real binary: sign-ins per address and per
//! account answer `429` with `Retry-After`; password hashing is bounded
//! (`503`, never unbounded memory); `X-Forwarded-For` is believed only from
//! a trusted proxy; the anonymous collector per session and per address;
//! anonymous websockets per address and subscriptions per connection. Each
//! refusal is counted in `/metrics`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::helpers::{ADMIN_EMAIL, App, Backend, Env, create_product, metric};

async fn login_from(app: &App, email: &str, forwarded: Option<&str>) -> crate::helpers::Reply {
    let mut req = app
        .http
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": email, "password": "wrong password here"}));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    app.send(req).await
}

fn retry_after(r: &crate::helpers::Reply) -> u64 {
    r.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", r.text))
}

#[tokio::test]
async fn sign_ins_are_limited_per_address_and_per_account() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE", "6")
        .set("SHOPSTREAM_LIMIT_AUTH_PER_ACCOUNT_PER_MINUTE", "3")
        .start()
        .await;
    // Per account: the fourth wrong password for one account in a minute.
    for _ in 0..3 {
        let r = login_from(&app, ADMIN_EMAIL, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
    let r = login_from(&app, ADMIN_EMAIL, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!((1..=60).contains(&retry_after(&r)));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // Per address: other accounts, the same address, three more tries.
    for i in 0..2 {
        let r = login_from(&app, &format!("nobody{i}@example.com"), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
    let r = login_from(&app, "another@example.com", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // X-Forwarded-For from an untrusted peer changes nothing.
    let r = login_from(&app, "spoof@example.com", Some("198.51.100.77")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // Registration counts against the address too.
    let r = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": "new@example.com", "password": "a long enough password", "name": "N"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let text = app.get("/metrics").await.text;
    assert!(
        text.contains("shopstream_rate_limited_total{door=\"auth_account\"}"),
        "{text}"
    );
    assert!(metric(&app, "shopstream_rate_limited_total").await >= 4.0);
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_counts_per_client_only_behind_a_trusted_proxy() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE", "2")
        .set("SHOPSTREAM_LIMIT_AUTH_PER_ACCOUNT_PER_MINUTE", "0")
        .set("SHOPSTREAM_TRUSTED_PROXIES", "127.0.0.0/8")
        .start()
        .await;
    // Behind the (trusted) loopback proxy, each client has its own budget.
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        for _ in 0..2 {
            let r = login_from(&app, "x@example.com", Some(client)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{client}: {}", r.text);
        }
        let r = login_from(&app, "x@example.com", Some(client)).await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{client}: {}",
            r.text
        );
    }
    // What a client writes left of the proxy's own entry is not believed.
    let r = login_from(&app, "x@example.com", Some("203.0.113.5, 198.51.100.1")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn password_hashing_is_bounded() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE", "0")
        .set("SHOPSTREAM_LIMIT_AUTH_PER_ACCOUNT_PER_MINUTE", "0")
        .set("SHOPSTREAM_HASH_CONCURRENCY", "1")
        .start()
        .await;
    // 120 wrong-password sign-ins from 16 tasks at once: each waits at most
    // a second for the one hashing place, then gets 503 with Retry-After.
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (http, url) = (app.http.clone(), app.url("/api/auth/login"));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..(120 / 16 + usize::from(t < 120 % 16)) {
                    let r = http
                        .post(&url)
                        .json(&json!({"email": format!("u{t}-{i}@example.com"), "password": "wrong password here"}))
                        .send()
                        .await
                        .unwrap();
                    let retry = r.headers().get("retry-after").is_some();
                    statuses.push((r.status().as_u16(), retry));
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 120);
    assert!(
        all.iter()
            .all(|(s, retry)| *s == 401 || (*s == 503 && *retry)),
        "{all:?}"
    );
    assert!(
        all.iter().any(|(s, _)| *s == 503),
        "the bound never held: {all:?}"
    );
    assert!(all.iter().any(|(s, _)| *s == 401));
    let text = app.get("/metrics").await.text;
    assert!(text.contains("door=\"hashing\""), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn the_anonymous_collector_is_limited_per_session_and_per_address() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_LIMIT_COLLECTOR_PER_SESSION_PER_MINUTE", "3")
        .set("SHOPSTREAM_LIMIT_COLLECTOR_PER_ADDRESS_PER_MINUTE", "5")
        .start()
        .await;
    let admin = app.admin_token().await;
    let product = create_product(&app, &admin, "LIMIT-1").await;
    let post = |session: String| {
        let body = json!([{"type": "browse.viewed",
            "data": {"session_id": session, "product_id": product}}]);
        app.send(
            app.http
                .post(app.url("/api/events"))
                .header("x-session-id", session)
                .json(&body),
        )
    };
    let s1 = uuid::Uuid::new_v4().to_string();
    for _ in 0..3 {
        assert_eq!(post(s1.clone()).await.status, StatusCode::ACCEPTED);
    }
    let r = post(s1.clone()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    retry_after(&r);
    // New sessions from the same address: the address's budget (5) runs out.
    let s2 = uuid::Uuid::new_v4().to_string();
    assert_eq!(post(s2.clone()).await.status, StatusCode::ACCEPTED);
    let r = post(uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // Signed-in callers are not held by the anonymous limits.
    let r = app
        .call(
            Method::POST,
            "/api/events",
            Some(&admin),
            Some(json!([{"type": "browse.viewed", "data": {"session_id": s2, "product_id": product}}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert!(
        app.get("/metrics")
            .await
            .text
            .contains("door=\"collector_session\"")
    );
    app.stop().await;
}

#[tokio::test]
async fn anonymous_websockets_and_snapshots_are_limited() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_LIMIT_WS_ANONYMOUS_PER_ADDRESS", "2")
        .set("SHOPSTREAM_LIMIT_WS_SNAPSHOTS_PER_MINUTE", "3")
        .start()
        .await;
    let base = app.base.replace("http://", "ws://");
    let open = || connect_async(format!("{base}/ws"));
    let (mut first, _) = open().await.unwrap();
    let (_second, _) = open().await.unwrap();
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            assert!(r.headers().get("retry-after").is_some());
        }
        other => panic!("a third anonymous connection: {other:?}"),
    }
    // Three subscriptions answered with a snapshot, then an error with
    // retry_after; the connection stays open.
    let mut replies = Vec::new();
    for topic in ["stock", "stock", "stock", "stock"] {
        first
            .send(Message::Text(
                json!({"op": "subscribe", "topic": topic})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(Ok(Message::Text(t))) = first.next().await {
                    return serde_json::from_str::<Value>(t.as_str()).unwrap();
                }
            }
        })
        .await
        .unwrap();
        replies.push(reply);
    }
    assert!(
        replies[..3].iter().all(|m| m["type"] == "snapshot"),
        "{replies:?}"
    );
    assert_eq!(replies[3]["type"], "error", "{replies:?}");
    assert!(replies[3]["retry_after"].as_u64().unwrap() >= 1);
    // A closed connection frees its place.
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = open().await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        again.is_some(),
        "the closed connection's place was not given back"
    );
    app.stop().await;
}
