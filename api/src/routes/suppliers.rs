//! Supplier records, managed by admins: who gets a product's low-stock
//! alerts, and how (contact e-mail, signed webhook). A supplier user reads
//! its own record.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use commerce::suppliers::{SupplierDraft, SupplierError, SupplierView};
use domain::Role;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::JsonBody,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/admin/suppliers",
            get(list_suppliers).post(create_supplier),
        )
        .route(
            "/api/admin/suppliers/{id}",
            get(get_supplier)
                .put(replace_supplier)
                .delete(delete_supplier),
        )
        .route(
            "/api/admin/suppliers/{id}/webhook-secret",
            post(rotate_webhook_secret),
        )
        .route("/api/supplier/me", get(my_supplier))
}

fn supplier_error(e: SupplierError) -> ApiError {
    match e {
        SupplierError::NotFound => ApiError::NotFound("supplier"),
        SupplierError::Exists => ApiError::Conflict("a supplier with this id exists".into()),
        SupplierError::VersionMismatch { current } => ApiError::PreconditionFailed { current },
        SupplierError::Store(e) => e.into(),
    }
}

fn with_etag(status: StatusCode, view: SupplierView) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", view.version)).expect("a number");
    let mut r = (status, Json(view)).into_response();
    r.headers_mut().insert(header::ETAG, etag);
    r
}

/// The version `If-Match` asks for: `None` without the header or with `*`;
/// a tag that is no version of ours matches none (`u64::MAX`).
fn if_match(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::IF_MATCH)?;
    let value = value.to_str().unwrap_or_default().trim();
    if value == "*" {
        return None;
    }
    Some(
        value
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .unwrap_or(u64::MAX),
    )
}

/// Every supplier, in id order (webhook secrets are never listed).
#[utoipa::path(get, path = "/api/admin/suppliers", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<SupplierView>), (status = 401, body = crate::Problem), (status = 403, body = crate::Problem)))]
pub async fn list_suppliers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SupplierView>>> {
    caller.require(Role::Admin)?;
    let all = state.suppliers.list().await?;
    Ok(Json(all.iter().map(|s| s.view(false)).collect()))
}

/// Adds a supplier. The answer carries the webhook secret, once: the
/// supplier checks each webhook's `Shopstream-Signature` with it.
#[utoipa::path(post, path = "/api/admin/suppliers", tag = "admin", security(("bearer" = [])),
    request_body(content = Object, description = "`id` (the `supplier_id` its products and users carry) and `name` \
        required; `contact_email` (low-stock alerts by e-mail) and `webhook_url` (https://) optional"),
    responses((status = 201, body = SupplierView, headers(("Location" = String), ("ETag" = String))),
        (status = 401, body = crate::Problem), (status = 403, body = crate::Problem),
        (status = 409, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn create_supplier(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let draft = SupplierDraft::parse(&body, true, state.config.webhook_allow_http)
        .map_err(ApiError::Validation)?;
    let s = state
        .suppliers
        .create(draft)
        .await
        .map_err(supplier_error)?;
    let location = format!("/api/admin/suppliers/{}", url_path_segment(&s.id));
    let mut r = with_etag(StatusCode::CREATED, s.view(true));
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Percent-encodes what a path segment cannot hold as it is.
fn url_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One supplier.
#[utoipa::path(get, path = "/api/admin/suppliers/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = SupplierView, headers(("ETag" = String))), (status = 401, body = crate::Problem),
        (status = 403, body = crate::Problem), (status = 404, body = crate::Problem)))]
pub async fn get_supplier(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    found(&state, &id).await
}

/// A supplier record as the API shows it (no secret), or `404`.
async fn found(state: &AppState, id: &str) -> ApiResult<Response> {
    let s = state
        .suppliers
        .get(id)
        .await?
        .ok_or(ApiError::NotFound("supplier"))?;
    Ok(with_etag(StatusCode::OK, s.view(false)))
}

/// Replaces a supplier's name, contact e-mail and webhook URL (the webhook
/// secret stays). `If-Match` makes it conditional on the version.
#[utoipa::path(put, path = "/api/admin/suppliers/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = Object, description = "`name` required; `contact_email`, `webhook_url` optional (absent: removed)"),
    responses((status = 200, body = SupplierView, headers(("ETag" = String))), (status = 401, body = crate::Problem),
        (status = 403, body = crate::Problem), (status = 404, body = crate::Problem),
        (status = 412, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn replace_supplier(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let draft = SupplierDraft::parse(&body, false, state.config.webhook_allow_http)
        .map_err(ApiError::Validation)?;
    let s = state
        .suppliers
        .replace(&id, draft, if_match(&headers))
        .await
        .map_err(supplier_error)?;
    Ok(with_etag(StatusCode::OK, s.view(false)))
}

/// Deletes a supplier record. Its products keep their `supplier_id`; their
/// alerts are still listed, but delivered to nobody until it is added again.
#[utoipa::path(delete, path = "/api/admin/suppliers/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = crate::Problem), (status = 403, body = crate::Problem),
        (status = 404, body = crate::Problem)))]
pub async fn delete_supplier(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    state.suppliers.delete(&id).await.map_err(supplier_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new webhook secret (the old one stops working at once) and
/// answers it, once.
#[utoipa::path(post, path = "/api/admin/suppliers/{id}/webhook-secret", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = SupplierView), (status = 401, body = crate::Problem),
        (status = 403, body = crate::Problem), (status = 404, body = crate::Problem)))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let s = state
        .suppliers
        .rotate_secret(&id)
        .await
        .map_err(supplier_error)?;
    Ok(with_etag(StatusCode::OK, s.view(true)))
}

/// A supplier user's own supplier record.
#[utoipa::path(get, path = "/api/supplier/me", tag = "supplier", security(("bearer" = [])),
    responses((status = 200, body = SupplierView), (status = 401, body = crate::Problem),
        (status = 403, body = crate::Problem), (status = 404, body = crate::Problem)))]
pub async fn my_supplier(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(Role::Supplier)?;
    let id = caller
        .supplier_id
        .as_deref()
        .ok_or(ApiError::Forbidden("supplier"))?;
    found(&state, id).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_percent_encoded_in_the_location() {
        assert_eq!(super::url_path_segment("acme gmbh/1"), "acme%20gmbh%2F1");
        assert_eq!(super::url_path_segment("a-b_c.d~e"), "a-b_c.d~e");
    }
}
