//! Live analytics and the dead-letter list (admin).

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    routing::{get, post},
};
use domain::{ProductId, Role};
use processors::state::Counters;
use serde::Serialize;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    routes::params::{Params, encode_cursor},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/analytics/summary", get(summary))
        .route("/api/analytics/products/{id}", get(product))
        .route("/api/analytics/trending", get(trending))
        .route("/api/admin/dead-letters", get(dead_letters))
        .route("/api/admin/leases", get(leases))
        .route(
            "/api/admin/dead-letters/{id}/replay",
            post(replay_dead_letter),
        )
}

/// Counters of one minute.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MinuteView {
    /// `2026-11-23T10:05` (UTC).
    pub minute: String,
    #[serde(flatten)]
    pub counters: CountersView,
}

/// Counters of one hour.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourView {
    /// `2026-11-23T10` (UTC): the hour from 10:00 to 11:00.
    pub hour: String,
    #[serde(flatten)]
    pub counters: CountersView,
}

/// One product's totals over a window of hours, and its hours.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductSummary {
    pub window_hours: i64,
    pub totals: CountersView,
    pub hours: Vec<HourView>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct CountersView {
    pub views: i64,
    pub basket_adds: i64,
    pub purchases: i64,
    pub units: i64,
    /// Exact decimal, summed over currencies as sent.
    pub revenue: String,
    /// Purchases per view (0 without views).
    pub conversion_rate: f64,
}

impl From<&Counters> for CountersView {
    fn from(c: &Counters) -> Self {
        Self {
            views: c.views,
            basket_adds: c.basket_adds,
            purchases: c.purchases,
            units: c.units,
            revenue: c.revenue.normalize().to_string(),
            conversion_rate: if c.views > 0 {
                c.purchases as f64 / c.views as f64
            } else {
                0.0
            },
        }
    }
}

/// Totals over a window and its minutes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub window_minutes: i64,
    pub totals: CountersView,
    pub minutes: Vec<MinuteView>,
}

fn window_minutes(p: &mut Params) -> i64 {
    match p.take("minutes").map(|v| v.parse::<i64>()) {
        None => 60,
        Some(Ok(m)) if (1..=1440).contains(&m) => m,
        Some(_) => {
            p.errors
                .push("minutes", "must be a whole number from 1 to 1440");
            60
        }
    }
}

fn total(rows: &[(String, Counters)]) -> CountersView {
    let mut totals = Counters::default();
    for (_, c) in rows {
        totals.add(c);
    }
    CountersView::from(&totals)
}

/// Shop-wide views, basket adds, purchases, units and revenue per minute.
#[utoipa::path(get, path = "/api/analytics/summary", tag = "analytics", security(("bearer" = [])),
    params(("minutes" = Option<i64>, Query, description = "window, 1 to 1440, default 60")),
    responses((status = 200, body = Summary), (status = 403, body = crate::Problem)))]
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Summary>> {
    caller.require(Role::Admin)?;
    let mut p = Params::parse(q.as_deref())?;
    let minutes = window_minutes(&mut p);
    p.finish()?;
    let rows = state
        .tables
        .minutes(time::OffsetDateTime::now_utc(), minutes)
        .await?;
    Ok(Json(Summary {
        window_minutes: minutes,
        totals: total(&rows),
        minutes: rows
            .into_iter()
            .map(|(minute, c)| MinuteView {
                minute,
                counters: (&c).into(),
            })
            .collect(),
    }))
}

/// One product's counters per hour (products are counted by the hour, the
/// shop as a whole by the minute).
#[utoipa::path(get, path = "/api/analytics/products/{id}", tag = "analytics", security(("bearer" = [])),
    params(("id" = String, Path), ("hours" = Option<i64>, Query, description = "window in hours up to now, the current hour included: 1 to 168, default 24")),
    responses((status = 200, body = ProductSummary), (status = 404, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<ProductSummary>> {
    caller.require(Role::Admin)?;
    let id: ProductId = id.parse().map_err(|_| ApiError::NotFound("product"))?;
    let mut p = Params::parse(q.as_deref())?;
    let hours = match p.take("hours").map(|v| v.parse::<i64>()) {
        None => 24,
        Some(Ok(h)) if (1..=168).contains(&h) => h,
        Some(_) => {
            p.errors
                .push("hours", "must be a whole number from 1 to 168");
            24
        }
    };
    p.finish()?;
    let rows = state
        .tables
        .product_hours(&id.to_string(), time::OffsetDateTime::now_utc(), hours)
        .await?;
    Ok(Json(ProductSummary {
        window_hours: hours,
        totals: total(&rows),
        hours: rows
            .into_iter()
            .map(|(hour, c)| HourView {
                hour,
                counters: (&c).into(),
            })
            .collect(),
    }))
}

/// One trending product.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrendingItem {
    pub product_id: String,
    #[serde(flatten)]
    pub counters: CountersView,
}

/// The most active products over the last hour or day.
#[utoipa::path(get, path = "/api/analytics/trending", tag = "analytics", security(("bearer" = [])),
    params(("window" = Option<String>, Query, description = "`1h` (default) or `24h`"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Vec<TrendingItem>), (status = 422, body = crate::Problem)))]
pub async fn trending(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<TrendingItem>>> {
    caller.require(Role::Admin)?;
    let mut p = Params::parse(q.as_deref())?;
    let (window, _) = p.window();
    let limit = p.limit();
    p.finish()?;
    let ranked = state.tables.trending(window, limit).await?;
    Ok(Json(
        ranked
            .iter()
            .map(|(id, c)| TrendingItem {
                product_id: id.clone(),
                counters: c.into(),
            })
            .collect(),
    ))
}

/// One dead letter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    pub id: String,
    pub reason: String,
    pub detail: String,
    pub stream: String,
    pub shard: String,
    pub position: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// The record as received (lossy UTF-8); only its first 4 KiB when it
    /// was over the 64 KiB event limit (`truncated`).
    pub raw: String,
    /// The record's length in bytes.
    pub raw_len: u64,
    /// SHA-256 of the whole record, in hex (empty for dead letters stored
    /// before it was kept).
    pub raw_sha256: String,
    /// Whether `raw` is only a prefix (such a dead letter cannot be
    /// replayed).
    pub truncated: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetterView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Records that were not valid events, newest first.
#[utoipa::path(get, path = "/api/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = DeadLetterPage), (status = 403, body = crate::Problem)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<DeadLetterPage>> {
    caller.require(Role::Admin)?;
    let mut p = Params::parse(q.as_deref())?;
    let limit = p.limit();
    let cursor = p.cursor();
    p.finish()?;
    let (items, next) = state.tables.dead_letters(limit, cursor).await?;
    Ok(Json(DeadLetterPage {
        items: items
            .into_iter()
            .map(|(id, d)| DeadLetterView {
                truncated: !d.is_whole(),
                id,
                reason: d.reason,
                detail: d.detail,
                stream: d.stream,
                shard: d.shard,
                position: d.position,
                at: d.at,
                raw_len: if d.raw_len == 0 {
                    d.raw.len() as u64
                } else {
                    d.raw_len
                },
                raw_sha256: d.raw_sha256,
                raw: String::from_utf8_lossy(&d.raw).into_owned(),
            })
            .collect(),
        next_cursor: encode_cursor(next),
    }))
}

/// One shard's (or partition's) lease.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseView {
    pub shard: String,
    /// The instance holding it, if anyone does.
    pub owner: Option<String>,
    /// Grows each time the lease is taken or renewed (other instances
    /// watch it to tell a lapsed lease).
    pub counter: u64,
    /// Milliseconds since the Unix epoch when the hold lapses, by the
    /// holder's clock (shown, never used to decide).
    pub expires_at: i64,
    /// The last position applied.
    pub checkpoint: Option<String>,
    pub parents: Vec<String>,
    /// Read to its end (a closed Kinesis shard).
    pub finished: bool,
}

/// The stream's shard leases: who reads what, and how far it got.
#[utoipa::path(get, path = "/api/admin/leases", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<LeaseView>), (status = 403, body = crate::Problem)))]
pub async fn leases(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<LeaseView>>> {
    caller.require(Role::Admin)?;
    let leases = state.leases.list(&state.config.lease_stream).await?;
    Ok(Json(
        leases
            .into_iter()
            .map(|(shard, l)| LeaseView {
                shard,
                owner: l.owner,
                counter: l.counter,
                expires_at: l.expires_at,
                checkpoint: l.checkpoint,
                parents: l.parents,
                finished: l.finished,
            })
            .collect(),
    ))
}

/// Where a replayed record went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Where the record went: `log partition P offset O`, `kinesis:STREAM`
    /// or `kafka:TOPIC`.
    pub to: String,
}

/// Puts a dead letter's record back on the stream (after a fix made it
/// valid) and removes it from the list — in one transaction on the embedded
/// log; on Kinesis or Kafka the append comes first, then the delete.
#[utoipa::path(post, path = "/api/admin/dead-letters/{id}/replay", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 202, body = Replayed), (status = 404, body = crate::Problem),
        (status = 409, description = "The dead letter keeps only a prefix of its record", body = crate::Problem)))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    caller.require(Role::Admin)?;
    let to = state
        .replay_dead_letter(&id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { to })))
}
