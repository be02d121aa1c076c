//! shopstream's HTTP API.
//!
//! # Layout
//! - [`AppState`] and [`router`]: what the handlers share and how they are
//!   routed, with the middleware every request passes (request id, tracing,
//!   metrics, body limit, timeout).
//! - `routes/`: one file per resource (`auth`, `me`, `products`, `events`,
//!   `inventory`, `analytics`, `basket`, `orders`, `supplier`, `ops`,
//!   `recs`, `model`), handlers and request/response types only: what they
//!   read or write goes through the crate that owns the table (`processors`,
//!   `commerce`, `serving`, `storage`'s repositories).
//! - [`auth`]: password hashing, our tokens, the external JWKS verifier and
//!   the `Caller` extractor.
//! - `error`: the one error type and its mapping to RFC 9457 problems.
//! - `extract`: the JSON body extractor whose rejections are problems.
//! - [`bootstrap`]: the first admin and the demo catalogue.
//! - `openapi`: the OpenAPI document, generated from the handlers.
//! - [`web`]: the storefront and the operations dashboard, embedded.

pub mod auth;
pub mod bootstrap;
mod error;
mod extract;
pub mod limits;
mod metrics;
mod openapi;
mod routes;
mod state;
pub mod web;
pub mod ws;

use std::{future::Future, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::HeaderName, middleware};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

pub use auth::{JwksSettings, Tokens};
pub use error::{ApiError, Problem};
pub use metrics::install_recorder;
pub use routes::{auth::create_user, oidc::OidcSettings};
pub use state::{AppState, Services};

/// Limits and switches of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// The most events one `POST /api/events` takes.
    pub max_events_per_request: usize,
    /// How far a browser's or customer's `occurred_at` may be from the
    /// server's clock; further is clamped to it.
    pub clock_skew: Duration,
    /// The stream whose shard leases `GET /api/admin/leases` shows.
    pub lease_stream: String,
    /// The websocket hub's limits.
    pub ws: ws::WsConfig,
    /// The largest product image accepted.
    pub image_max_bytes: usize,
    /// Rate limits and the bound on password hashing.
    pub limits: limits::LimitsConfig,
    /// Whether `/metrics` is served on the API's listener (else on a
    /// listener of its own, see [`serve_metrics`]).
    pub metrics_on_api: bool,
    /// At most this many recommended items per category in one response.
    pub recommend_per_category: usize,
    /// Categories whose bought items may be recommended again (groceries).
    pub recommend_repeat_categories: Vec<String>,
    /// Whether a supplier's webhook URL may be `http://`.
    pub webhook_allow_http: bool,
    /// Sign-in to the pages through the external issuer, if configured.
    pub oidc: Option<routes::oidc::OidcSettings>,
    /// How long a sign-in through the external issuer lasts (refreshes
    /// included) before the user signs in there again, which brings their
    /// groups up to date.
    pub oidc_session: Duration,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API.
pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let span = tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id,
            otel.name = %format!("HTTP {}", req.method()), otel.kind = "server");
        // A caller that traces (W3C Trace Context) makes this its child.
        if let Some(tp) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|t| domain::event::is_traceparent(t))
        {
            processors::trace::follow(&span, tp);
        }
        span
    });
    let images = routes::images::router(state.config.image_max_bytes);
    Router::new()
        .merge(images)
        .merge(routes::auth::router())
        .merge(routes::oidc::router())
        .merge(routes::me::router())
        .merge(routes::products::router())
        .merge(routes::search::router())
        .merge(routes::events::router())
        .merge(routes::inventory::router())
        .merge(routes::analytics::router())
        .merge(routes::ops::router(state.config.metrics_on_api))
        .merge(routes::basket::router())
        .merge(routes::orders::router())
        .merge(routes::supplier::router())
        .merge(routes::suppliers::router())
        .merge(routes::recs::router())
        .merge(routes::model::router())
        .merge(ws::router())
        .merge(web::router())
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(metrics::track))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Serves `/metrics` alone on `listener` (`metrics_listen`: an address for
/// the scraper only, off the public one) until `shutdown` completes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, routes::ops::metrics_router().with_state(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long open websockets get to take their 1001 close at shutdown.
const WS_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Serves the API on `listener` until `shutdown` completes, then finishes the
/// requests in flight and, meanwhile, closes every websocket with 1001
/// (going away) so that clients reconnect to another instance at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (fired, mut fired_rx) = tokio::sync::watch::channel(false);
    let hub = state.hub.clone();
    // Upgraded connections are not the server's any more: it would not wait
    // for them, nor close them.
    let closer = tokio::spawn(async move {
        let _ = fired_rx.wait_for(|f| *f).await;
        hub.close_all(WS_CLOSE_WAIT).await
    });
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = fired.send(true);
    })
    .await;
    let _ = closer.await;
    served
}
