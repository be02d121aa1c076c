//! The HTTP collector: browsers and other systems send events, which are
//! appended durably to the configured stream before the answer, and so take
//! the same path as every other event.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use domain::{Event, EventPayload, Role, Subject};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::{
    AppState,
    auth::{Caller, MaybeCaller},
    error::{ApiError, ApiResult},
    extract::JsonBody,
    limits::ClientIp,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/events", post(collect))
}

/// The header an anonymous session names itself with.
pub const SESSION_HEADER: &str = "x-session-id";

/// One event the collector refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventError {
    pub index: usize,
    /// A dead-letter reason (`invalid_payload`, `unknown_type`, …) or `forbidden`.
    pub reason: String,
    pub detail: String,
    /// The field at fault in the event, where one is known
    /// (`data.session_id`, `source`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What the collector did with a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Collected {
    pub accepted: usize,
    pub rejected: Vec<EventError>,
}

/// Whether the caller may send this event.
fn allowed(
    caller: Option<&Caller>,
    session: Option<&str>,
    payload: &EventPayload,
) -> Result<(), domain::Invalid> {
    if let Some(c) = caller
        && matches!(c.role, Role::Admin | Role::Service)
    {
        return Ok(());
    }
    let subject = match payload {
        EventPayload::BrowseViewed { actor, .. } | EventPayload::BasketAdded { actor, .. } => {
            actor.subject()
        }
        _ => {
            return Err(domain::Invalid::new(format!(
                "{} events need the admin or service role",
                payload.type_name()
            )));
        }
    };
    let own_session = |s: &str| session.is_some_and(|h| h == s);
    match (subject, caller) {
        (Some(Subject::User(u)), Some(c)) if c.subject == u => Ok(()),
        (Some(Subject::Session(s)), _) if own_session(&s) => Ok(()),
        (Some(Subject::User(_)), _) => {
            Err("a customer may only send events about itself (user_id must be yours)".into())
        }
        _ => Err(domain::Invalid::new(format!(
            "a session may only send events about itself (session_id must match {SESSION_HEADER})"
        ))),
    }
}

/// What the server does to a browser's or customer's events before they go
/// on the stream: it names the `source` itself, clamps `occurred_at` to its
/// own clock (within `clock_skew`), drops a `recommendation_id` it did not
/// issue to that subject (attribution ignores it), and refuses behaviour
/// about a product that is not in the catalogue.
async fn untrust(
    state: &AppState,
    caller: Option<&Caller>,
    events: Vec<(usize, Event)>,
) -> ApiResult<Vec<Result<Event, EventError>>> {
    let now = domain::now();
    let skew = time::Duration::try_from(state.config.clock_skew).unwrap_or(time::Duration::ZERO);
    let source = match caller {
        Some(_) => "http:customer",
        None => "http:anonymous",
    };
    let mut known: std::collections::HashMap<domain::ProductId, bool> = Default::default();
    let mut out = Vec::with_capacity(events.len());
    for (index, mut e) in events {
        e.source = source.to_owned();
        e.occurred_at = e.occurred_at.clamp(now - skew, now + skew);
        let subject = e
            .payload
            .actor()
            .and_then(domain::Actor::subject)
            .map(|s| s.key());
        let (product_id, recommendation_id) = match &mut e.payload {
            EventPayload::BrowseViewed {
                product_id,
                recommendation_id,
                ..
            }
            | EventPayload::BasketAdded {
                product_id,
                recommendation_id,
                ..
            } => (*product_id, recommendation_id),
            _ => {
                out.push(Ok(e));
                continue;
            }
        };
        *recommendation_id = state.verified_reco_id(recommendation_id.take(), subject.as_deref());
        let exists = match known.get(&product_id) {
            Some(k) => *k,
            None => {
                let k = state.products.get(product_id).await?.is_some();
                known.insert(product_id, k);
                k
            }
        };
        out.push(if exists {
            Ok(e)
        } else {
            Err(EventError {
                index,
                reason: "unknown_product".into(),
                detail: format!("no product {product_id} in the catalogue"),
                field: Some("data.product_id".into()),
            })
        });
    }
    Ok(out)
}

/// Accepts a JSON array of events. `id`, `occurred_at` and `source` may be
/// left out: the collector fills them in. From a customer or an anonymous
/// session, the server sets `source` itself, clamps `occurred_at` to its
/// clock (within `collector_clock_skew_secs`), drops a `recommendation_id`
/// it did not issue to that subject, and refuses behaviour about a product
/// not in the catalogue (`unknown_product`). Answers `202` once every valid
/// event is durably appended; invalid ones are listed by index and reason.
#[utoipa::path(post, path = "/api/events", tag = "events",
    request_body(content = Vec<Object>, description = "event envelopes; see docs/events.md"),
    params(("x-session-id" = Option<String>, Header, description = "an anonymous session's id")),
    responses(
        (status = 202, body = Collected),
        (status = 422, description = "no event was valid", body = crate::Problem),
        (status = 413, body = crate::Problem),
    ))]
pub async fn collect(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Collected>)> {
    let session = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    if caller.is_none() {
        state.limits.collector(ip, session)?;
    }
    let Value::Array(items) = body else {
        return Err(ApiError::field(
            "",
            "the body must be a JSON array of events",
        ));
    };
    let max = state.config.max_events_per_request;
    if items.is_empty() || items.len() > max {
        return Err(ApiError::field(
            "",
            format!("send 1 to {max} events per request"),
        ));
    }
    let source = caller
        .as_ref()
        .map_or_else(|| "http".to_owned(), |c| format!("http:{}", c.role));
    let trusted = caller
        .as_ref()
        .is_some_and(|c| matches!(c.role, Role::Admin | Role::Service));
    let mut events = Vec::with_capacity(items.len());
    let mut untrusted = Vec::new();
    let mut rejected = Vec::new();
    for (index, mut item) in items.into_iter().enumerate() {
        if let Value::Object(o) = &mut item {
            o.entry("id")
                .or_insert_with(|| Value::String(uuid::Uuid::now_v7().to_string()));
            o.entry("occurred_at").or_insert_with(|| {
                Value::String(
                    domain::now()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                )
            });
            o.entry("source")
                .or_insert_with(|| Value::String(source.clone()));
        }
        let bytes = serde_json::to_vec(&item).unwrap_or_default();
        match Event::decode(&bytes) {
            Err(r) => rejected.push(EventError {
                index,
                reason: r.reason.as_str().into(),
                detail: r.detail,
                field: r.field,
            }),
            Ok(e) if trusted => events.push(e),
            Ok(e) => match allowed(caller.as_ref(), session, &e.payload) {
                Ok(()) => untrusted.push((index, e)),
                Err(detail) => rejected.push(EventError {
                    index,
                    reason: "forbidden".into(),
                    detail: detail.into(),
                    field: None,
                }),
            },
        }
    }
    for e in untrust(&state, caller.as_ref(), untrusted).await? {
        match e {
            Ok(e) => events.push(e),
            Err(refused) => rejected.push(refused),
        }
    }
    rejected.sort_by_key(|r| r.index);
    if events.is_empty() {
        let mut errors = domain::ValidationErrors::default();
        for r in &rejected {
            let field = match &r.field {
                Some(f) => format!("[{}].{f}", r.index),
                None => format!("[{}]", r.index),
            };
            errors.push(field, format!("{}: {}", r.reason, r.detail));
        }
        return Err(ApiError::Validation(errors));
    }
    // The consumer's spans join this request's trace (when traced).
    let span = tracing::info_span!("events.publish", events = events.len());
    let traceparent = processors::trace::of(&span);
    for e in &mut events {
        e.traceparent.clone_from(&traceparent);
    }
    state
        .events
        .publish(&events)
        .instrument(span)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the stream did not take the events: {e}")))?;
    for e in &events {
        metrics::counter!("shopstream_events_received_total", "type" => e.payload.type_name(), "source" => "http")
            .increment(1);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Collected {
            accepted: events.len(),
            rejected,
        }),
    ))
}
