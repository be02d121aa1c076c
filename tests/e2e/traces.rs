//! One trace from an HTTP request, through the event it publishes and the
//! pipeline commit that applies it, to the websocket push: exported by OTLP
//! (HTTP/protobuf) to a collector played by this test on loopback.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, Env, adjust, create_product, eventually};

/// A span as the collector got it: name, trace id, span id, parent span id
/// (hex; empty for a root).
type Got = (String, String, String, String);

async fn collector(spans: Arc<Mutex<Vec<Got>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let spans = spans.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let mut got = spans.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            got.push((
                                s.name,
                                hex::encode(s.trace_id),
                                hex::encode(s.span_id),
                                hex::encode(s.parent_span_id),
                            ));
                        }
                    }
                }
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn one_trace_from_the_request_to_the_websocket_push() {
    let spans = Arc::new(Mutex::new(Vec::<Got>::new()));
    let endpoint = collector(spans.clone()).await;
    let env = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_OTEL_ENDPOINT", &endpoint)
        // Only the caller's sampled traceparent makes a trace here.
        .set("SHOPSTREAM_OTEL_SAMPLING_RATIO", "0");
    let app = env.start().await;
    let admin = app.admin_token().await;
    let id = create_product(&app, &admin, "TRACE-1").await;
    let mut ws = crate::ws::connect(&app, None).await;
    crate::ws::send(
        &mut ws,
        json!({"op": "subscribe", "topic": format!("stock:{id}")}),
    )
    .await;
    let snapshot = crate::ws::next(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");

    // The caller's own trace, sampled.
    let trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let caller_span = "00f067aa0ba902b7";
    let r = app
        .send(
            app.http
                .post(app.url("/api/events"))
                .bearer_auth(&admin)
                .header("traceparent", format!("00-{trace}-{caller_span}-01"))
                .json(&json!([adjust(&id, 4)])),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let pushed = crate::ws::next(&mut ws).await;
    assert_eq!(pushed["type"], "change", "{pushed}");

    let find = |name: &str| -> Option<Got> {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.0 == name && s.1 == trace)
            .cloned()
    };
    eventually("the four spans of the trace at the collector", || async {
        let missing: Vec<&str> = ["HTTP POST", "events.publish", "pipeline.apply", "ws.push"]
            .into_iter()
            .filter(|n| find(n).is_none())
            .collect();
        missing.is_empty().then_some(()).ok_or(format!(
            "missing {missing:?}; got {:?}",
            spans.lock().unwrap()
        ))
    })
    .await;
    let request = find("HTTP POST").unwrap();
    let publish = find("events.publish").unwrap();
    let apply = find("pipeline.apply").unwrap();
    let push = find("ws.push").unwrap();
    assert_eq!(
        request.3, caller_span,
        "the request continues the caller's trace"
    );
    assert_eq!(
        publish.3, request.2,
        "the event is published under the request"
    );
    assert_eq!(apply.3, publish.2, "the commit follows the published event");
    assert_eq!(push.3, apply.2, "the push follows the commit");

    // Unsampled callers (and, at ratio 0, everyone else) leave no trace.
    let before = spans.lock().unwrap().len();
    let r = app
        .call(
            Method::POST,
            "/api/events",
            Some(&admin),
            Some(json!([adjust(&id, 1)])),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let _ = crate::ws::next(&mut ws).await;
    app.stop().await;
    let after: Vec<Got> = spans.lock().unwrap()[before..].to_vec();
    assert!(
        after.iter().all(|s| s.1 == trace),
        "an unsampled request made spans: {after:?}"
    );
}
