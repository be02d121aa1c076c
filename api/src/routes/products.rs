//! The product catalogue: reads are public, writes need the admin role.
//! Every write is also published as a `product.upserted` / `product.deleted`
//! event.

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use domain::{
    Event, EventPayload, Product, ProductDraft, ProductId, ProductPatch, Role, product::DraftMode,
};
use serde::Serialize;
use storage::products::{ProductError, ProductFilter};
use tracing::Instrument;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::JsonBody,
    routes::params::{NAME_PARAM_LEN, Params, encode_cursor},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/products", get(list_products).post(create_product))
        .route("/api/categories", get(list_categories))
        .route(
            "/api/products/{id}",
            get(get_product)
                .put(replace_product)
                .patch(patch_product)
                .delete(delete_product),
        )
}

/// A page of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a number is a valid header")
}

fn with_etag(status: StatusCode, p: Product) -> Response {
    let mut response = (status, Json(&p)).into_response();
    response.headers_mut().insert(header::ETAG, etag(p.version));
    response
}

/// Refuses the write if `If-Match` names another version than the current.
fn check_if_match(headers: &HeaderMap, current: u64) -> ApiResult<()> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::PreconditionFailed { current })?;
    let matches = value.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == current.to_string()
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::PreconditionFailed { current })
    }
}

fn parse_id(id: &str) -> ApiResult<ProductId> {
    id.parse().map_err(|_| ApiError::NotFound("product"))
}

async fn publish(state: &AppState, payload: EventPayload) {
    let mut event = Event::new("api", payload);
    let kind = event.payload.type_name();
    let span = tracing::info_span!("events.publish", events = 1);
    event.traceparent = processors::trace::of(&span);
    let published = state
        .events
        .publish(std::slice::from_ref(&event))
        .instrument(span)
        .await;
    if let Err(e) = published {
        // The write itself succeeded; the event is logged so it can be replayed.
        metrics::counter!("shopstream_events_publish_failed_total", "type" => kind).increment(1);
        tracing::error!(error = %e, event = %serde_json::to_string(&event).unwrap_or_default(),
            "could not publish event");
    } else {
        metrics::counter!("shopstream_events_published_total", "type" => kind).increment(1);
    }
}

fn product_error(e: ProductError) -> ApiError {
    match e {
        ProductError::NotFound => ApiError::NotFound("product"),
        ProductError::VersionMismatch { current } => ApiError::PreconditionFailed { current },
        ProductError::DuplicateSku(sku) => {
            ApiError::Conflict(format!("another product has sku {sku:?}"))
        }
        ProductError::Store(e) => e.into(),
    }
}

/// The categories that have products, in name order: the list the search
/// index keeps (from the catalogue while it is being built at start-up).
#[utoipa::path(get, path = "/api/categories", tag = "products",
    responses((status = 200, body = Vec<String>)))]
pub async fn list_categories(State(state): State<AppState>) -> ApiResult<Response> {
    if let Some(json) = state.search.categories_json() {
        let headers = [(header::CONTENT_TYPE, "application/json")];
        return Ok((headers, axum::body::Bytes::from_owner(json)).into_response());
    }
    Ok(Json(state.products.categories().await?).into_response())
}

/// Lists products, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/products", tag = "products",
    params(
        ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("category" = Option<String>, Query),
        ("supplier_id" = Option<String>, Query),
        ("q" = Option<String>, Query, description = "only products whose name contains this (any case). \
            A search reads at most 1,000 products per request: a page may hold fewer than `limit` \
            items and still have a `next_cursor` to search on from"),
    ),
    responses((status = 200, body = ProductPage), (status = 422, body = crate::Problem)))]
pub async fn list_products(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ProductPage>> {
    let mut params = Params::parse(query.as_deref())?;
    let limit = params.limit();
    // A made-up cursor only starts the page elsewhere.
    let cursor = params.cursor();
    let mut filter = ProductFilter {
        category: params.name("category", NAME_PARAM_LEN),
        supplier_id: params.name("supplier_id", NAME_PARAM_LEN),
        ..ProductFilter::default()
    };
    match params.take("q") {
        Some(v) if !v.trim().is_empty() && v.chars().count() <= 100 => {
            filter.name_contains = Some(v.trim().to_lowercase());
        }
        Some(_) => params.errors.push("q", "must be 1 to 100 characters"),
        None => {}
    }
    params.finish()?;
    let (items, next) = state.products.list(&filter, limit, cursor).await?;
    Ok(Json(ProductPage {
        items,
        next_cursor: encode_cursor(next),
    }))
}

/// Creates a product.
#[utoipa::path(post, path = "/api/products", tag = "products", security(("bearer" = [])),
    request_body(content = Object, description = "`sku`, `name`, `price` (decimal string), `currency`, `category` required; \
        `description`, `supplier_id`, `image_url`, `attributes`, `low_stock_threshold` optional"),
    responses(
        (status = 201, body = Product, headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = crate::Problem), (status = 401, body = crate::Problem),
        (status = 403, body = crate::Problem), (status = 409, body = crate::Problem),
        (status = 413, body = crate::Problem), (status = 415, body = crate::Problem),
        (status = 422, body = crate::Problem),
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let draft = ProductDraft::parse(&body, DraftMode::Create).map_err(ApiError::Validation)?;
    let product = draft.into_product(ProductId::new(), domain::now());
    state
        .products
        .create(&product)
        .await
        .map_err(product_error)?;
    publish(
        &state,
        EventPayload::ProductUpserted(Box::new(product.clone())),
    )
    .await;
    let location = format!("/api/products/{}", product.id);
    let mut response = with_etag(StatusCode::CREATED, product);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ascii"),
    );
    Ok(response)
}

/// One product.
#[utoipa::path(get, path = "/api/products/{id}", tag = "products",
    params(("id" = String, Path)),
    responses((status = 200, body = Product, headers(("ETag" = String))), (status = 404, body = crate::Problem)))]
pub async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let p = state
        .products
        .get_cached(parse_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    Ok(with_etag(StatusCode::OK, p))
}

pub(crate) async fn write(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    change: impl Fn(&mut Product),
) -> ApiResult<Response> {
    let id = parse_id(id)?;
    let old = state
        .products
        .get(id)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    check_if_match(headers, old.version)?;
    let mut new = old.clone();
    change(&mut new);
    new.version = old.version + 1;
    new.updated_at = domain::now();
    state
        .products
        .update(&old, &new)
        .await
        .map_err(product_error)?;
    publish(state, EventPayload::ProductUpserted(Box::new(new.clone()))).await;
    Ok(with_etag(StatusCode::OK, new))
}

/// Replaces every client-set field of a product.
#[utoipa::path(put, path = "/api/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag read before")),
    request_body(content = Object, description = "as for create"),
    responses((status = 200, body = Product), (status = 404, body = crate::Problem),
        (status = 409, body = crate::Problem), (status = 412, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn replace_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let draft = ProductDraft::parse(&body, DraftMode::Replace).map_err(ApiError::Validation)?;
    write(&state, &id, &headers, |p| p.replace_with(draft.clone())).await
}

/// Changes some fields of a product; `null` clears an optional one.
#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag read before")),
    request_body(content = Object, description = "any subset of the create fields"),
    responses((status = 200, body = Product), (status = 404, body = crate::Problem),
        (status = 409, body = crate::Problem), (status = 412, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn patch_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let patch = ProductPatch::parse(&body).map_err(ApiError::Validation)?;
    write(&state, &id, &headers, |p| patch.clone().apply(p)).await
}

/// Deletes a product. Its id is never given to another product.
#[utoipa::path(delete, path = "/api/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = crate::Problem), (status = 412, body = crate::Problem)))]
pub async fn delete_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let id = parse_id(&id)?;
    let p = state
        .products
        .get(id)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    check_if_match(&headers, p.version)?;
    state.products.delete(&p).await.map_err(product_error)?;
    publish(&state, EventPayload::ProductDeleted { product_id: id }).await;
    Ok(StatusCode::NO_CONTENT)
}
