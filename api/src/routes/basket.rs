//! The basket: for a logged-in user, or for an anonymous session the API
//! issues (`X-Session-Id` header and `shopstream_session` cookie).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, patch},
};
use commerce::{BasketError, BasketView};
use domain::{
    Actor, Event, EventPayload, ProductId,
    validate::{FieldReader, Len},
};

use crate::{
    AppState,
    auth::MaybeCaller,
    error::{ApiError, ApiResult},
    extract::JsonBody,
    routes::events::SESSION_HEADER,
};

pub const SESSION_COOKIE: &str = "shopstream_session";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/basket", get(get_basket).delete(clear_basket))
        .route("/api/basket/items", axum::routing::post(add_item))
        .route(
            "/api/basket/items/{product_id}",
            patch(set_item).delete(remove_item),
        )
}

/// Whose basket a request is about.
#[derive(Debug)]
pub struct Owner {
    /// `user:{id}` or `session:{id}`.
    pub key: String,
    pub actor: Actor,
    /// A session id this response issues.
    pub issued: Option<String>,
}

fn cookie_session(headers: &HeaderMap) -> Option<String> {
    crate::extract::cookie(headers, SESSION_COOKIE).map(str::to_owned)
}

/// The anonymous session a request names (header first, then cookie);
/// `Err` if it names one that is not a session id this API issues.
pub fn session_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let named = headers
        .get(SESSION_HEADER)
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .or_else(|| cookie_session(headers));
    match named {
        None => Ok(None),
        // The hyphenated form only, as issued (and as `format: uuid` says).
        Some(s) => match uuid::Uuid::parse_str(&s) {
            Ok(u) if s.len() == 36 => Ok(Some(u.to_string())),
            _ => Err(ApiError::field(
                SESSION_HEADER,
                "must be a session id this API issued (a UUID)",
            )),
        },
    }
}

/// The caller's basket owner: the user if logged in, else the session,
/// issuing a new session when there is none and `issue` is set.
pub fn owner(caller: &MaybeCaller, headers: &HeaderMap, issue: bool) -> ApiResult<Option<Owner>> {
    if let Some(c) = &caller.0 {
        // A signed-in caller's session header is not used, but a malformed
        // one is still an error (a stale cookie is not).
        if headers.contains_key(SESSION_HEADER) {
            session_of(headers)?;
        }
        return Ok(Some(Owner {
            key: format!("user:{}", c.subject),
            actor: Actor {
                user_id: Some(c.subject.clone()),
                session_id: None,
            },
            issued: None,
        }));
    }
    let (session, issued) = match session_of(headers)? {
        Some(s) => (s, None),
        None if issue => {
            let s = uuid::Uuid::new_v4().to_string();
            (s.clone(), Some(s))
        }
        None => return Ok(None),
    };
    Ok(Some(Owner {
        key: format!("session:{session}"),
        actor: Actor {
            user_id: None,
            session_id: Some(session),
        },
        issued,
    }))
}

fn respond(state: &AppState, owner: &Owner, status: StatusCode, view: BasketView) -> Response {
    let mut r = (status, Json(view)).into_response();
    if let Some(s) = &owner.issued {
        let max_age = state.shop.config.basket_idle.as_secs();
        if let Ok(v) = HeaderValue::from_str(s) {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={s}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
        )) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

impl From<BasketError> for ApiError {
    fn from(e: BasketError) -> Self {
        match e {
            BasketError::Quantity { .. } => ApiError::field("quantity", e.to_string()),
            BasketError::UnknownProduct(_) | BasketError::Currency { .. } => {
                ApiError::field("product_id", e.to_string())
            }
            BasketError::NotInBasket(_) => ApiError::NotFound("basket line"),
            BasketError::TooManyLines(_) => ApiError::field("product_id", e.to_string()),
            BasketError::Busy => ApiError::Conflict(e.to_string()),
            BasketError::Store(e) => e.into(),
        }
    }
}

/// The caller's basket with current prices, live availability and total.
/// An anonymous caller without a session gets an empty basket and a new
/// session id (`X-Session-Id` header and cookie).
#[utoipa::path(get, path = "/api/basket", tag = "basket",
    params(("x-session-id" = Option<String>, Header, description = "an anonymous session's id, as issued")),
    responses((status = 200, body = BasketView), (status = 422, body = crate::Problem)))]
pub async fn get_basket(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let owner = owner(&caller, &headers, true)?.expect("issued");
    let view = state.shop.basket(&owner.key).await?;
    Ok(respond(&state, &owner, StatusCode::OK, view))
}

#[derive(Debug, utoipa::ToSchema)]
pub struct AddItem {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: String,
    /// 1 to `max_quantity` (99 by default).
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
    /// The recommendation that led here, for attribution.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub recommendation_id: Option<String>,
}

/// Adds units of a product (on top of what is in the basket) and publishes
/// `basket.added`.
#[utoipa::path(post, path = "/api/basket/items", tag = "basket", request_body = AddItem,
    params(("x-session-id" = Option<String>, Header, description = "an anonymous session's id, as issued")),
    responses((status = 200, body = BasketView), (status = 422, body = crate::Problem)))]
pub async fn add_item(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let max = state.shop.config.max_quantity;
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let product_id = r.string("product_id", true, Len { min: 1, max: 64 });
    let quantity = r.integer("quantity", true, 1, max);
    let recommendation_id = r.string("recommendation_id", false, Len { min: 1, max: 128 });
    r.deny_unknown();
    let (Some(product_id), Some(quantity)) = (product_id, quantity) else {
        return Err(ApiError::Validation(r.errors));
    };
    if !r.errors.is_empty() {
        return Err(ApiError::Validation(r.errors));
    }
    let body = AddItem {
        product_id,
        quantity,
        recommendation_id,
    };
    let owner = owner(&caller, &headers, true)?.expect("issued");
    // Only ids this service issued to this customer count for attribution.
    let recommendation_id = state.verified_reco_id(body.recommendation_id, Some(&owner.key));
    let id: ProductId = body.product_id.parse().map_err(|_| {
        ApiError::field(
            "product_id",
            format!("no product {} in the catalogue", body.product_id),
        )
    })?;
    let event = Event::new(
        "api",
        EventPayload::BasketAdded {
            actor: owner.actor.clone(),
            product_id: id,
            quantity: body.quantity,
            recommendation_id,
        },
    );
    let view = state
        .shop
        .add_to_basket(&owner.key, id, body.quantity, Some(event))
        .await?;
    Ok(respond(&state, &owner, StatusCode::OK, view))
}

#[derive(Debug, utoipa::ToSchema)]
pub struct SetItem {
    /// 1 to `max_quantity` (99 by default).
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

/// Sets a line's quantity.
#[utoipa::path(patch, path = "/api/basket/items/{product_id}", tag = "basket", request_body = SetItem,
    params(("product_id" = String, Path), ("x-session-id" = Option<String>, Header)),
    responses((status = 200, body = BasketView), (status = 404, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn set_item(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(product_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let quantity = r.integer("quantity", true, 1, state.shop.config.max_quantity);
    r.deny_unknown();
    let Some(quantity) = quantity.filter(|_| r.errors.is_empty()) else {
        return Err(ApiError::Validation(r.errors));
    };
    let body = SetItem { quantity };
    let owner = owner(&caller, &headers, false)?.ok_or(ApiError::NotFound("basket line"))?;
    let view = state
        .shop
        .set_quantity(&owner.key, &product_id, body.quantity)
        .await?;
    Ok(respond(&state, &owner, StatusCode::OK, view))
}

/// Removes a line.
#[utoipa::path(delete, path = "/api/basket/items/{product_id}", tag = "basket",
    params(("product_id" = String, Path), ("x-session-id" = Option<String>, Header)),
    responses((status = 200, body = BasketView), (status = 404, body = crate::Problem)))]
pub async fn remove_item(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    let owner = owner(&caller, &headers, false)?.ok_or(ApiError::NotFound("basket line"))?;
    let view = state
        .shop
        .remove_from_basket(&owner.key, &product_id)
        .await?;
    Ok(respond(&state, &owner, StatusCode::OK, view))
}

/// Empties the basket.
#[utoipa::path(delete, path = "/api/basket", tag = "basket",
    params(("x-session-id" = Option<String>, Header)),
    responses((status = 204)))]
pub async fn clear_basket(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    if let Some(owner) = owner(&caller, &headers, false)? {
        state.shop.clear_basket(&owner.key).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
