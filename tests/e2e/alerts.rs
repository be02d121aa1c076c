//! Low-stock alerts delivered to suppliers: by a signed webhook to a
//! receiver on loopback (with a crash between the crossing and the
//! delivery), and through moto's SES and SNS. One delivery per crossing.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{App, Backend, Env, adjust, create_product, eventually, post_events};

/// What the receiver got: every request, and how it answered.
#[derive(Clone, Debug, Default)]
struct Received {
    /// (delivery id, timestamp, signature, body, answered 2xx)
    requests: Vec<(String, String, String, Vec<u8>, bool)>,
    /// Answer 503 while true.
    failing: bool,
}

async fn receiver(state: Arc<Mutex<Received>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/hooks/stock",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut s = state.lock().unwrap();
                let ok = !s.failing;
                s.requests.push((
                    h("shopstream-delivery"),
                    h("shopstream-timestamp"),
                    h("shopstream-signature"),
                    body.to_vec(),
                    ok,
                ));
                if ok {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hooks/stock")
}

/// Successful deliveries per alert id.
fn delivered(state: &Arc<Mutex<Received>>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (id, _, _, _, ok) in &state.lock().unwrap().requests {
        if *ok {
            *out.entry(id.clone()).or_default() += 1;
        }
    }
    out
}

async fn create_supplier(app: &App, admin: &str, body: Value) -> Value {
    let r = app
        .call(
            Method::POST,
            "/api/admin/suppliers",
            Some(admin),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body
}

async fn wait_available(app: &App, id: &str, n: i64) {
    eventually("the stock", || async {
        let r = app.get(&format!("/api/inventory/{id}")).await;
        (r.body["available"] == n).then_some(()).ok_or(r.text)
    })
    .await;
}

/// Falls from 5 to 2 (threshold 3): one crossing.
async fn cross(app: &App, admin: &str, id: &str) {
    post_events(app, admin, json!([adjust(id, 5)])).await;
    wait_available(app, id, 5).await;
    post_events(app, admin, json!([adjust(id, -3)])).await;
    wait_available(app, id, 2).await;
}

#[tokio::test]
async fn webhook_alerts_are_signed_retried_and_delivered_once_across_a_crash() {
    let got = Arc::new(Mutex::new(Received::default()));
    let url = receiver(got.clone()).await;
    let env = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_SUPPLIER_NOTIFIER", "webhook")
        .set("SHOPSTREAM_WEBHOOK_ALLOW_HTTP", "true");
    let app = env.start().await;
    let admin = app.admin_token().await;
    // Refused: a webhook must be https:// unless allowed, and a supplier
    // record needs a name.
    let r = app
        .call(
            Method::POST,
            "/api/admin/suppliers",
            Some(&admin),
            Some(json!({"id": "acme", "webhook_url": "ftp://x.example/"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["name", "webhook_url"], "{}", r.text);
    let made = create_supplier(
        &app,
        &admin,
        json!({"id": "acme", "name": "Acme Socks", "webhook_url": url}),
    )
    .await;
    let secret = made["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40, "{made}");
    let listed = app
        .call(Method::GET, "/api/admin/suppliers", Some(&admin), None)
        .await;
    assert_eq!(listed.body[0]["id"], "acme");
    assert!(
        listed.body[0].get("webhook_secret").is_none(),
        "a listing never shows the secret: {}",
        listed.body
    );

    // The first crossing: the receiver fails the first attempt, then takes it.
    got.lock().unwrap().failing = true;
    let id = create_product(&app, &admin, "HOOK-1").await;
    cross(&app, &admin, &id).await;
    eventually("a first, failed attempt", || async {
        let n = got.lock().unwrap().requests.len();
        (n >= 1).then_some(()).ok_or(format!("{n} requests"))
    })
    .await;
    got.lock().unwrap().failing = false;
    eventually("the retried delivery", || async {
        let d = delivered(&got);
        (d.len() == 1).then_some(()).ok_or(format!("{d:?}"))
    })
    .await;
    {
        let s = got.lock().unwrap();
        let (delivery, timestamp, signature, body, _) =
            s.requests.iter().find(|r| r.4).unwrap().clone();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&body);
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, expected, "the signature checks with the secret");
        let alert: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(alert["type"], "low_stock");
        assert_eq!(alert["id"], delivery.as_str());
        assert_eq!(alert["product_id"], id.as_str());
        assert_eq!(alert["supplier_id"], "acme");
        assert_eq!(alert["available"], 2);
        assert_eq!(alert["threshold"], 3);
        // Every attempt carried the same delivery id.
        assert!(
            s.requests.iter().all(|r| r.0 == delivery),
            "{:?}",
            s.requests
        );
    }

    // The second crossing, with a crash between it and its delivery: the
    // receiver is down, the process is killed, the receiver comes back, a
    // new process delivers it once.
    got.lock().unwrap().failing = true;
    let before = got.lock().unwrap().requests.len();
    post_events(&app, &admin, json!([adjust(&id, 5)])).await;
    wait_available(&app, &id, 7).await;
    post_events(&app, &admin, json!([adjust(&id, -5)])).await;
    wait_available(&app, &id, 2).await;
    eventually("an attempt at the second alert", || async {
        let n = got.lock().unwrap().requests.len();
        (n > before).then_some(()).ok_or(format!("{n} requests"))
    })
    .await;
    app.kill().await;
    got.lock().unwrap().failing = false;
    let app = env.start().await;
    eventually("the second alert, delivered by the new process", || async {
        let d = delivered(&got);
        (d.len() == 2).then_some(()).ok_or(format!("{d:?}"))
    })
    .await;
    // Nothing more comes: the relay deleted it, the sweeper sees no crossing.
    let admin = app.admin_token().await;
    let r = app
        .call(
            Method::GET,
            "/api/supplier/alerts?supplier_id=acme",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{}", r.text);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = delivered(&got);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.values().all(|n| *n == 1), "one delivery each: {d:?}");
    app.stop().await;
}

#[tokio::test]
async fn ses_alerts_go_to_the_suppliers_contact_once_per_crossing() {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let sender = format!("shop-{suffix}@example.com");
    crate::commerce::verify_ses_sender(&sender).await;
    let env = Env::new(Backend::Aws)
        .set("SHOPSTREAM_SUPPLIER_NOTIFIER", "ses")
        .set("SHOPSTREAM_SES_FROM", &sender);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let contact = format!("stock-{suffix}@acme.example");
    create_supplier(
        &app,
        &admin,
        json!({"id": "acme", "name": "Acme", "contact_email": contact}),
    )
    .await;
    let id = create_product(&app, &admin, &format!("SES-{suffix}")).await;
    cross(&app, &admin, &id).await;
    let words = [contact.as_str(), id.as_str(), "Low stock"];
    let sent = || crate::commerce::ses_sent(&words);
    eventually("the alert e-mail", || async {
        let n = sent().await;
        (n >= 1).then_some(()).ok_or(format!("{n} sent"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sent().await, 1, "one e-mail per crossing");
    app.stop().await;
}

#[tokio::test]
async fn sns_alerts_carry_the_supplier_id_attribute_once_per_crossing() {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let arn = crate::commerce::create_sns_topic(&format!("alerts-{suffix}")).await;
    let env = Env::new(Backend::Aws)
        .set("SHOPSTREAM_SUPPLIER_NOTIFIER", "sns")
        .set("SHOPSTREAM_SUPPLIER_SNS_TOPIC_ARN", &arn);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let id = create_product(&app, &admin, &format!("SNS-{suffix}")).await;
    cross(&app, &admin, &id).await;
    let published = || async {
        crate::commerce::sns_published(&arn)
            .await
            .iter()
            .filter(|m| {
                // (message id, message, subject, attributes, group id)
                let message: Value =
                    serde_json::from_str(m[1].as_str().unwrap_or("{}")).unwrap_or_default();
                message["product_id"] == id.as_str()
                    && message["type"] == "low_stock"
                    && m[3].to_string().contains("supplier_id")
                    && m[3].to_string().contains("acme")
            })
            .count()
    };
    eventually("the alert on the topic", || async {
        let n = published().await;
        (n >= 1).then_some(()).ok_or(format!("{n} published"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(published().await, 1, "one message per crossing");
    app.stop().await;
}
