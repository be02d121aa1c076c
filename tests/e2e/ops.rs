//! Operational endpoints, and the events product writes publish.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use storage::Store;

use crate::{
    helpers::{Backend, Env, product},
    on_both_backends,
};

async fn health_ready_metrics_openapi(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert!(
        health.header("x-request-id").is_some(),
        "every response carries a request id"
    );
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    app.get("/api/products").await;
    app.get("/api/products/nope").await;
    let metrics = app.send(app.http.get(app.url("/metrics"))).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text;
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total{")
            && l.contains("route=\"/api/products/{id}\"")
            && l.contains("status=\"404\"")),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "latency is a histogram"
    );

    let spec = app.get("/api/openapi.json").await;
    assert_eq!(spec.status, StatusCode::OK);
    let paths = spec.body["paths"].as_object().unwrap();
    for p in [
        "/api/products",
        "/api/products/{id}",
        "/api/auth/login",
        "/api/auth/register",
        "/api/auth/refresh",
        "/api/me",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/basket",
        "/api/basket/items",
        "/api/basket/items/{product_id}",
        "/api/checkout",
        "/api/orders",
        "/api/orders/{id}",
        "/api/orders/{id}/cancel",
        "/api/orders/{id}/status",
        "/api/admin/orders",
        "/api/supplier/alerts",
        "/api/supplier/alerts/{id}/ack",
        "/api/supplier/products",
        "/api/products/{id}/image",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(spec.body["components"]["schemas"]["Product"].is_object());
    let docs = app.send(app.http.get(app.url("/docs"))).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("/api/openapi.json") || docs.text.contains("openapi"));
    app.stop().await;
}

async fn product_writes_publish_events(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let created = app
        .call(
            Method::POST,
            "/api/products",
            Some(&admin),
            Some(product("EVT")),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    app.call(
        Method::PATCH,
        &format!("/api/products/{id}"),
        Some(&admin),
        Some(json!({"name": "Renamed"})),
    )
    .await;
    app.call(
        Method::DELETE,
        &format!("/api/products/{id}"),
        Some(&admin),
        None,
    )
    .await;
    app.stop().await;

    // Read the log straight from the store the server used.
    let store: Arc<dyn Store> = match backend {
        Backend::Embedded => {
            Arc::new(storage::embedded::Embedded::open(&env.data_dir(), &env.prefix).unwrap())
        }
        Backend::Aws => {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(crate::helpers::dynamodb_endpoint())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "test", "test", None, None, "e2e",
                ))
                .load()
                .await;
            Arc::new(storage::dynamo::Dynamo::new(
                aws_sdk_dynamodb::Client::new(&config),
                &env.prefix,
            ))
        }
    };
    let log = ingest::StoreLog::new(store, ingest::log::DEFAULT_PARTITIONS);
    let partition = log.partition_of(&id);
    let events: Vec<Value> = log
        .read(partition, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.data).unwrap())
        .collect();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["data"]["id"] == json!(id) || e["data"]["product_id"] == json!(id))
        .collect();
    let types: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["product.upserted", "product.upserted", "product.deleted"]
    );
    assert_eq!(mine[1]["data"]["name"], "Renamed");
    assert_eq!(mine[0]["source"], "api");
}

on_both_backends!(health_ready_metrics_openapi, product_writes_publish_events);

/// The LocalStack ready hook creates every table `shopstream init` does, with
/// the same names, and the stream docker-compose.yml configures.
#[test]
fn the_localstack_hook_creates_what_init_creates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let hook = std::fs::read_to_string(format!("{root}/localstack/init-aws.sh")).unwrap();
    let line = hook
        .lines()
        .find(|l| l.starts_with("for table in "))
        .expect("the table loop");
    let listed: Vec<&str> = line
        .trim_start_matches("for table in ")
        .trim_end_matches("; do")
        .split_whitespace()
        .collect();
    let tables: Vec<&str> = storage::Table::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(listed, tables);
    assert!(hook.contains(r#"PREFIX="${SHOPSTREAM_TABLE_PREFIX:-shopstream_}""#));
    let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    assert!(compose.contains("SHOPSTREAM_KINESIS_STREAM: shopstream-events"));
    assert!(compose.contains("./localstack/init-aws.sh:/etc/localstack/init/ready.d/"));
}

/// The storefront and the dashboard come from the binary itself, with
/// caching headers and a strict Content-Security-Policy.
#[tokio::test]
async fn the_web_pages_are_served_with_caching_and_a_strict_policy() {
    let app = Env::new(Backend::Embedded).start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/assets/shop.js", "text/javascript"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        // Revalidation: the same ETag answers 304 without a body.
        let etag = h["etag"].to_str().unwrap().to_owned();
        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let page = app.http.get(app.url("/")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/shop.js">"#));
    for missing in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets//style.css",
    ] {
        let r = app.http.get(app.url(missing)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
    }
    app.stop().await;
}

/// `/metrics` on an address of its own (for the scraper, off the public
/// listener), and a method label that stays bounded whatever clients send.
#[tokio::test]
async fn metrics_can_be_served_on_their_own_address() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_METRICS_LISTEN", "127.0.0.1:0")
        .start()
        .await;
    let metrics_url = app
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("shopstream metrics on "))
        .expect("the metrics address is printed")
        .to_owned();
    // A made-up method, answered and counted under `other`.
    let odd = reqwest::Method::from_bytes(b"FLOODME").unwrap();
    app.send(app.http.request(odd, app.url("/api/products")))
        .await;
    assert_eq!(app.get("/metrics").await.status, StatusCode::NOT_FOUND);
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains("FLOODME"), "{text}");
    app.stop().await;
}
