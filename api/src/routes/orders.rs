//! Checkout, orders and their tracking.

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use commerce::{
    ChangeError, CheckoutError, CheckoutRequest, Customer, OrderPage,
    order::{By, Order, Shipment, Status},
    payment::luhn_valid,
};
use domain::{
    Role,
    validate::{FieldReader, Len},
};
use sha2::{Digest, Sha256};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::JsonBody,
    routes::params::{Params, encode_cursor},
};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/checkout", post(checkout))
        .route("/api/orders", get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .route("/api/orders/{id}/status", post(set_status))
        .route("/api/admin/orders", get(admin_orders))
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::EmptyBasket => ApiError::field("basket", e.to_string()),
            CheckoutError::UnknownProducts(ids) => ApiError::Validation(ids.iter().fold(
                domain::ValidationErrors::default(),
                |mut v, id| {
                    v.push(
                        "basket",
                        format!("product {id} is no longer in the catalogue; remove it"),
                    );
                    v
                },
            )),
            CheckoutError::OutOfStock(s) => ApiError::OutOfStock(s),
            CheckoutError::KeyReused => ApiError::field(
                "Idempotency-Key",
                "this key was already used with a different request body",
            ),
            CheckoutError::MixedCurrencies => ApiError::field("basket", e.to_string()),
            CheckoutError::Busy => ApiError::Conflict(e.to_string()),
            CheckoutError::Store(e) => e.into(),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound => ApiError::NotFound("order"),
            ChangeError::Transition(t) => ApiError::Conflict(t.to_string()),
            ChangeError::ShipmentMissing => ApiError::field("tracking_number", e.to_string()),
            ChangeError::Busy => ApiError::Conflict(e.to_string()),
            ChangeError::Store(e) => e.into(),
        }
    }
}

fn customer(caller: &Caller) -> ApiResult<Customer> {
    if caller.role == Role::Service {
        return Err(ApiError::Forbidden("customer"));
    }
    Ok(Customer {
        user_id: caller.subject.clone(),
        email: None,
    })
}

/// Answers with the order, or with the problem its failed payment is.
fn order_response(order: Order, created: bool) -> ApiResult<Response> {
    if order.status == Status::PaymentFailed {
        let p = order.payment.clone();
        let outcome = p.as_ref().map_or(String::new(), |p| p.outcome.clone());
        let outcome = outcome.as_str();
        let status = match outcome {
            "declined" => StatusCode::PAYMENT_REQUIRED,
            "timeout" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        let why = p.and_then(|p| p.message.clone()).unwrap_or_default();
        return Err(ApiError::Payment {
            status,
            order_id: order.id,
            message: match outcome {
                "declined" => format!(
                    "the card was declined ({why}); nothing was charged and the basket is unchanged"
                ),
                "timeout" => format!("{why}; nothing was charged and the basket is unchanged"),
                _ => format!(
                    "the payment could not be processed ({why}); nothing was charged and the basket is unchanged"
                ),
            },
        });
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = (status, Json(order.clone())).into_response();
    if let Ok(v) = format!("/api/orders/{}", order.id).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Checks out the caller's basket: reserves every line in one conditional
/// transaction, charges the card, and confirms the order. Requires an
/// `Idempotency-Key` header: a retry with the same key and body returns the
/// same order and never charges twice. Test cards: `4242424242424242`
/// approves, `4000000000000002` is declined (402), `4000000000000119` is a
/// processor error (502), `4000000000000259` answers slowly (504 once the
/// payment timeout passes).
#[utoipa::path(post, path = "/api/checkout", tag = "orders", security(("bearer" = [])),
    request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters, unique per checkout")),
    responses((status = 201, body = Order), (status = 402, body = crate::Problem), (status = 409, body = crate::Problem, description = "out of stock: `shortages` lists each product"),
        (status = 422, body = crate::Problem), (status = 502, body = crate::Problem), (status = 504, body = crate::Problem)))]
pub async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let card_number = r.string("card_number", true, Len { min: 1, max: 32 });
    let recommendation_id = r.string("recommendation_id", false, Len { min: 1, max: 128 });
    r.deny_unknown();
    if let Some(c) = &card_number
        && !luhn_valid(c)
    {
        r.errors.push(
            "card_number",
            "is not a valid card number (13 to 19 digits, no spaces, passing the Luhn check)",
        );
    }
    let Some(card_number) = card_number.filter(|_| r.errors.is_empty()) else {
        return Err(ApiError::Validation(r.errors));
    };
    // Only ids this service issued to this customer count for attribution.
    let subject = format!("user:{}", caller.subject);
    let body = CheckoutRequest {
        card_number,
        recommendation_id: state.verified_reco_id(recommendation_id, Some(&subject)),
    };
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "required: 1 to 255 visible ASCII characters, unique per checkout",
            )
        })?
        .to_owned();
    let mut customer = customer(&caller)?;
    if let Some(id) = caller.user_id()
        && let Some(u) = state.users.get(id).await?
    {
        customer.email = Some(u.email.to_string());
    }
    let hash = {
        let canonical = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
        let digest = Sha256::digest(&canonical);
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let before = std::time::Instant::now();
    let order = state.shop.checkout(&customer, &key, &body, &hash).await?;
    metrics::histogram!("shopstream_checkout_seconds").record(before.elapsed().as_secs_f64());
    // 201 for a new order; a replay of the key answers 201 too, with the
    // same order (what the first call answered).
    order_response(order, true)
}

/// Reads an order: its owner or an admin; anyone else gets 404.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 404, body = crate::Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    Ok(Json(visible_order(&state, &caller, &id).await?))
}

async fn visible_order(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Order> {
    match state.shop.order(id).await? {
        Some(o) if o.user_id == caller.subject || caller.role == Role::Admin => Ok(o),
        _ => Err(ApiError::NotFound("order")),
    }
}

fn page_params(
    q: Option<&str>,
    with_status: bool,
) -> ApiResult<(usize, Option<String>, Option<Status>)> {
    let mut p = Params::parse(q)?;
    let limit = p.limit();
    let cursor = p.cursor();
    let status = if with_status {
        match p.take("status") {
            None => None,
            Some(s) => match Status::parse(&s) {
                Some(s) => Some(s),
                None => {
                    p.errors.push("status", format!("unknown status {s:?}"));
                    None
                }
            },
        }
    } else {
        None
    };
    p.finish()?;
    Ok((limit, cursor, status))
}

fn opaque(mut page: OrderPage) -> OrderPage {
    page.next_cursor = encode_cursor(page.next_cursor);
    page
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = OrderPage), (status = 422, body = crate::Problem)))]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<OrderPage>> {
    let (limit, cursor, _) = page_params(q.as_deref(), false)?;
    let page = state
        .shop
        .orders(Some(&caller.subject), None, limit, cursor)
        .await?;
    Ok(Json(opaque(page)))
}

/// Every order (admin), newest first, optionally in one status.
#[utoipa::path(get, path = "/api/admin/orders", tag = "admin", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query), ("status" = Option<String>, Query)),
    responses((status = 200, body = OrderPage), (status = 403, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn admin_orders(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<OrderPage>> {
    caller.require(Role::Admin)?;
    let (limit, cursor, status) = page_params(q.as_deref(), true)?;
    Ok(Json(opaque(
        state.shop.orders(None, status, limit, cursor).await?,
    )))
}

/// Cancels the caller's own order before it ships: releases the
/// reservation, or restocks and refunds a paid order.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 404, body = crate::Problem), (status = 409, body = crate::Problem)))]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    let order = visible_order(&state, &caller, &id).await?;
    let by = if caller.role == Role::Admin {
        By::Admin
    } else {
        By::Customer
    };
    let actor = format!("{}:{}", caller.role, caller.subject);
    Ok(Json(
        state
            .shop
            .change_status(
                &order.id,
                Status::Cancelled,
                by,
                &actor,
                Some("cancelled on request".into()),
                None,
            )
            .await?,
    ))
}

#[derive(Debug, utoipa::ToSchema)]
pub struct SetStatus {
    /// `packed`, `shipped`, `delivered`, `cancelled` or `refunded`.
    pub status: String,
    /// Required for `shipped`.
    pub carrier: Option<String>,
    /// Required for `shipped`.
    pub tracking_number: Option<String>,
    pub note: Option<String>,
}

/// Moves an order along its state machine (admin). An invalid transition is
/// refused with 409.
#[utoipa::path(post, path = "/api/orders/{id}/status", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = SetStatus,
    responses((status = 200, body = Order), (status = 403, body = crate::Problem), (status = 404, body = crate::Problem),
        (status = 409, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Order>> {
    caller.require(Role::Admin)?;
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let status = r.string("status", true, Len { min: 1, max: 32 });
    let carrier = r.string("carrier", false, Len { min: 1, max: 64 });
    let tracking_number = r.string("tracking_number", false, Len { min: 1, max: 64 });
    let note = r.string("note", false, Len { min: 1, max: 500 });
    r.deny_unknown();
    let Some(status) = status.filter(|_| r.errors.is_empty()) else {
        return Err(ApiError::Validation(r.errors));
    };
    let body = SetStatus {
        status,
        carrier,
        tracking_number,
        note,
    };
    let to = Status::parse(&body.status)
        .ok_or_else(|| ApiError::field("status", format!("unknown status {:?}", body.status)))?;
    let shipment = match (body.carrier, body.tracking_number) {
        (Some(c), Some(t)) if !c.trim().is_empty() && !t.trim().is_empty() => Some(Shipment {
            carrier: c.trim().to_owned(),
            tracking_number: t.trim().to_owned(),
        }),
        (None, None) => None,
        _ => {
            return Err(ApiError::field(
                "tracking_number",
                "carrier and tracking_number go together",
            ));
        }
    };
    let actor = format!("admin:{}", caller.subject);
    Ok(Json(
        state
            .shop
            .change_status(&id, to, By::Admin, &actor, body.note, shipment)
            .await?,
    ))
}
