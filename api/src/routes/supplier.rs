//! What suppliers see: their low-stock alerts and their products' live stock.

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    routing::{get, post},
};
use domain::Role;
use processors::state::{Alert, Stock};
use serde::Serialize;
use storage::products::ProductFilter;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    routes::{
        inventory::StockView,
        params::{Params, encode_cursor},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/supplier/alerts", get(list_alerts))
        .route("/api/supplier/alerts/{id}/ack", post(ack_alert))
        .route("/api/supplier/products", get(list_products))
}

/// The supplier a request is about: a supplier's own; an admin names one
/// with `supplier_id`.
fn supplier_of(caller: &Caller, p: &mut Params) -> ApiResult<String> {
    let asked = p.name("supplier_id", crate::routes::params::NAME_PARAM_LEN);
    match caller.role {
        Role::Supplier => caller
            .supplier_id
            .clone()
            .ok_or(ApiError::Forbidden("supplier")),
        Role::Admin => asked.ok_or_else(|| ApiError::field("supplier_id", "required for an admin")),
        _ => Err(ApiError::Forbidden("supplier")),
    }
}

/// A page of alerts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The caller's low-stock alerts, newest first (a supplier: its own
/// products only; an admin: `supplier_id` required).
#[utoipa::path(get, path = "/api/supplier/alerts", tag = "supplier", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query), ("supplier_id" = Option<String>, Query, description = "admin only")),
    responses((status = 200, body = AlertPage), (status = 403, body = crate::Problem)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<AlertPage>> {
    let mut p = Params::parse(q.as_deref())?;
    let supplier = supplier_of(&caller, &mut p)?;
    let limit = p.limit();
    let cursor = p.cursor();
    p.finish()?;
    let (items, next) = state.tables.alerts(&supplier, limit, cursor).await?;
    Ok(Json(AlertPage {
        items,
        next_cursor: encode_cursor(next),
    }))
}

/// Acknowledges one of the supplier's alerts.
#[utoipa::path(post, path = "/api/supplier/alerts/{id}/ack", tag = "supplier", security(("bearer" = [])),
    params(("id" = String, Path), ("supplier_id" = Option<String>, Query, description = "admin only")),
    responses((status = 200, body = Object), (status = 404, body = crate::Problem)))]
pub async fn ack_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Alert>> {
    let mut p = Params::parse(q.as_deref())?;
    let supplier = supplier_of(&caller, &mut p)?;
    p.finish()?;
    let alert = state
        .tables
        .acknowledge_alert(&supplier, &id)
        .await?
        .ok_or(ApiError::NotFound("alert"))?;
    Ok(Json(alert))
}

/// A supplier's product with its live stock.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SupplierProduct {
    pub product: domain::Product,
    pub stock: StockView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SupplierProductPage {
    pub items: Vec<SupplierProduct>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The supplier's products with live stock.
#[utoipa::path(get, path = "/api/supplier/products", tag = "supplier", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query), ("supplier_id" = Option<String>, Query, description = "admin only")),
    responses((status = 200, body = SupplierProductPage), (status = 403, body = crate::Problem)))]
pub async fn list_products(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<SupplierProductPage>> {
    let mut p = Params::parse(q.as_deref())?;
    let supplier = supplier_of(&caller, &mut p)?;
    let limit = p.limit();
    let cursor = p.cursor();
    p.finish()?;
    let filter = ProductFilter {
        category: None,
        supplier_id: Some(supplier),
        ..ProductFilter::default()
    };
    let (products, next) = state.products.list(&filter, limit, cursor).await?;
    let mut items = Vec::with_capacity(products.len());
    for product in products {
        let id = product.id.to_string();
        let stock = state.tables.stock(&id).await?.unwrap_or_else(|| Stock {
            low_stock_threshold: Some(i64::from(product.low_stock_threshold)),
            ..Stock::default()
        });
        items.push(SupplierProduct {
            stock: StockView::new(id, stock),
            product,
        });
    }
    Ok(Json(SupplierProductPage {
        items,
        next_cursor: encode_cursor(next),
    }))
}
