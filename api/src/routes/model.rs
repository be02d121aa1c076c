//! The recommender's admin side: the model being served, training now, and
//! what each model version and source earned (attribution).

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use domain::Role;
use serde::Serialize;
use serving::model::Trained;

use crate::{AppState, auth::Caller, error::ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/model", get(model_info))
        .route("/api/admin/model/train", post(train))
        .route("/api/analytics/recommendations", get(attribution))
}

/// The model being served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// False until a model was trained (popularity answers meanwhile).
    pub trained: bool,
    pub version: Option<String>,
    pub trained_at: Option<String>,
    pub training_ms: Option<u64>,
    pub interactions: Option<usize>,
    pub subjects: Option<usize>,
    pub items: Option<usize>,
    /// The ranker's training: targets, candidate recall, feature weights.
    #[schema(value_type = Option<Object>, nullable = true)]
    pub report: Option<serde_json::Value>,
}

fn info(t: Option<&Trained>) -> ModelInfo {
    ModelInfo {
        trained: t.is_some(),
        version: t.map(|t| t.version.clone()),
        trained_at: t.map(|t| t.trained_at.clone()),
        training_ms: t.map(|t| t.training_ms),
        interactions: t.map(|t| t.interactions),
        subjects: t.map(|t| t.subjects),
        items: t.map(|t| t.items.len()),
        report: t.and_then(|t| serde_json::to_value(&t.report).ok()),
    }
}

/// The model version, its training and its data (admin).
#[utoipa::path(get, path = "/api/admin/model", tag = "recommendations", security(("bearer" = [])),
    responses((status = 200, body = ModelInfo), (status = 403, body = crate::Problem)))]
pub async fn model_info(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ModelInfo>> {
    caller.require(Role::Admin)?;
    Ok(Json(info(state.recs.current().as_deref())))
}

/// Trains a model now on the interaction log and swaps it in (admin).
#[utoipa::path(post, path = "/api/admin/model/train", tag = "recommendations", security(("bearer" = [])),
    responses((status = 200, body = ModelInfo), (status = 409, body = crate::Problem),
        (status = 422, body = crate::Problem)))]
pub async fn train(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<ModelInfo>> {
    caller.require(Role::Admin)?;
    match state.recs.train(std::sync::Arc::new(|_| ())).await {
        Ok(t) => Ok(Json(info(Some(&t)))),
        Err(e) => Err(e.into()),
    }
}

/// What one model version earned, in total and per source.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attribution {
    /// The model version, or `popularity` for answers given without one.
    pub model_version: String,
    pub responses: i64,
    #[serde(flatten)]
    pub totals: Funnel,
    /// The same funnel per candidate source (events that carried an item's
    /// `recommendation_id`).
    pub sources: Vec<SourceFunnel>,
}

/// One source's funnel within a model version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceFunnel {
    pub source: String,
    #[serde(flatten)]
    pub funnel: Funnel,
}

/// Impressions → clicks → basket adds → purchases.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    /// Items shown.
    pub impressions: i64,
    /// Views that carried one of its recommendation ids (as do
    /// `basket_adds` and `purchases`).
    pub clicks: i64,
    pub basket_adds: i64,
    pub purchases: i64,
    /// clicks / impressions.
    pub click_rate: f64,
    /// purchases / clicks.
    pub purchase_rate: f64,
}

fn ratio(n: i64, d: i64) -> f64 {
    if d > 0 { n as f64 / d as f64 } else { 0.0 }
}

/// Recommendation impressions → clicks → basket adds → purchases per model
/// version (admin).
#[utoipa::path(get, path = "/api/analytics/recommendations", tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = Vec<Attribution>), (status = 403, body = crate::Problem)))]
pub async fn attribution(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Attribution>>> {
    caller.require(Role::Admin)?;
    let rows = state.tables.attribution().await?;
    let funnel = |r: &processors::read::AttributionRow| Funnel {
        impressions: r.impressions,
        clicks: r.clicks,
        basket_adds: r.basket_adds,
        purchases: r.purchases,
        click_rate: ratio(r.clicks, r.impressions),
        purchase_rate: ratio(r.purchases, r.clicks),
    };
    let mut out: Vec<Attribution> = rows
        .iter()
        .filter(|r| r.source.is_none())
        .map(|r| Attribution {
            model_version: r.model_version.clone(),
            responses: r.responses,
            totals: funnel(r),
            sources: Vec::new(),
        })
        .collect();
    for a in &mut out {
        a.sources = rows
            .iter()
            .filter(|r| r.model_version == a.model_version)
            .filter_map(|r| {
                Some(SourceFunnel {
                    source: r.source.clone()?,
                    funnel: funnel(r),
                })
            })
            .collect();
    }
    Ok(Json(out))
}
