//! Live stock, as the processors keep it.

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    routing::get,
};
use domain::{ProductId, Role};
use processors::state::Stock;
use serde::Serialize;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    routes::params::{Params, encode_cursor},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/inventory", get(list_inventory))
        .route("/api/inventory/{product_id}", get(get_inventory))
}

/// One product's stock.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockView {
    pub product_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand - reserved`: what can be sold now.
    pub available: i64,
    /// Units sold that stock could not cover.
    pub backorder: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_stock_threshold: Option<i64>,
    pub below_threshold: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier_id: Option<String>,
}

impl StockView {
    pub fn new(product_id: String, s: Stock) -> Self {
        Self {
            product_id,
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
            backorder: s.backorder,
            below_threshold: s.low_stock_threshold.is_some_and(|t| s.available < t),
            low_stock_threshold: s.low_stock_threshold,
            supplier_id: s.supplier_id,
        }
    }
}

/// A page of stock levels.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockPage {
    pub items: Vec<StockView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A product's live stock. A product no stock event has touched has none.
#[utoipa::path(get, path = "/api/inventory/{product_id}", tag = "inventory",
    params(("product_id" = String, Path)),
    responses((status = 200, body = StockView), (status = 404, body = crate::Problem)))]
pub async fn get_inventory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<StockView>> {
    let id: ProductId = id.parse().map_err(|_| ApiError::NotFound("product"))?;
    let stock = match state.tables.stock(&id.to_string()).await? {
        Some(s) if !s.deleted => s,
        _ => {
            // A catalogue product without stock events has zero stock.
            let p = state
                .products
                .get(id)
                .await?
                .ok_or(ApiError::NotFound("product"))?;
            Stock {
                low_stock_threshold: Some(i64::from(p.low_stock_threshold)),
                supplier_id: p.supplier_id,
                ..Stock::default()
            }
        }
    };
    Ok(Json(StockView::new(id.to_string(), stock)))
}

/// Stock of every product (admin), a page at a time.
#[utoipa::path(get, path = "/api/inventory", tag = "inventory", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query),
        ("below_threshold" = Option<bool>, Query, description = "only products under their low-stock threshold")),
    responses((status = 200, body = StockPage), (status = 403, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn list_inventory(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<StockPage>> {
    caller.require(Role::Admin)?;
    let mut p = Params::parse(q.as_deref())?;
    let limit = p.limit();
    let cursor = p.cursor();
    let below = p.flag("below_threshold");
    p.finish()?;
    let (items, next) = state.tables.stock_page(limit, cursor, below).await?;
    Ok(Json(StockPage {
        items: items
            .into_iter()
            .map(|(id, s)| StockView::new(id, s))
            .collect(),
        next_cursor: encode_cursor(next),
    }))
}
