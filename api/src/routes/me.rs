//! The caller's own profile.

use std::collections::BTreeMap;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use domain::{
    Role, User,
    user::Address,
    validate::{FieldReader, Len},
};
use serde::Serialize;
use serde_json::Value;
use storage::users::UserError;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::JsonBody,
    routes::auth::NAME_LEN,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/me", get(get_me).patch(patch_me).delete(delete_me))
}

/// A user as the API shows them (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    #[schema(value_type = String, format = Uuid)]
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
    pub preferences: BTreeMap<String, String>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    pub version: u64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            name: u.name.clone(),
            role: u.role,
            supplier_id: u.supplier_id.clone(),
            shipping_address: u.shipping_address.clone(),
            preferences: u.preferences.clone(),
            created_at: u.created_at,
            version: u.version,
        }
    }
}

async fn load(state: &AppState, caller: &Caller) -> ApiResult<User> {
    let id = caller
        .user_id()
        .ok_or(ApiError::NotFound("local profile"))?;
    state.users.get(id).await?.ok_or(ApiError::NotFound("user"))
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = crate::Problem)))]
pub async fn get_me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(&load(&state, &caller).await?)))
}

/// Changes the caller's name, shipping address or preferences.
#[utoipa::path(patch, path = "/api/me", tag = "me", security(("bearer" = [])),
    request_body(content = Object, description = "any of `name`, `shipping_address` (object or null), `preferences` (string map)"),
    responses((status = 200, body = UserView), (status = 422, body = crate::Problem)))]
pub async fn patch_me(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<UserView>> {
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let name = r.string("name", false, NAME_LEN);
    let address = if r.is_null("shipping_address") {
        r.raw("shipping_address");
        Some(None)
    } else {
        r.raw("shipping_address")
            .map(|v| Some(parse_address(v, &mut r)))
    };
    let preferences = r.string_map(
        "preferences",
        50,
        Len { min: 1, max: 64 },
        Len { min: 0, max: 512 },
    );
    r.deny_unknown();
    if !r.errors.is_empty() {
        return Err(ApiError::Validation(r.errors));
    }
    // Optimistic concurrency: re-read and retry if someone else wrote first.
    for _ in 0..5 {
        let mut user = load(&state, &caller).await?;
        let expected = user.version;
        if let Some(n) = &name {
            user.name = n.clone();
        }
        if let Some(a) = &address {
            user.shipping_address = a.clone().flatten();
        }
        if let Some(p) = &preferences {
            user.preferences = p.clone();
        }
        user.version += 1;
        user.updated_at = domain::now();
        match state.users.update(&user, expected).await {
            Ok(()) => return Ok(Json(UserView::from(&user))),
            Err(UserError::VersionMismatch) => continue,
            Err(UserError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    Err(ApiError::Conflict(
        "the profile is being changed concurrently; try again".into(),
    ))
}

fn parse_address(v: &Value, r: &mut FieldReader<'_>) -> Option<Address> {
    let mut a = match FieldReader::new(v) {
        Ok(a) => a,
        Err(_) => {
            r.errors
                .push("shipping_address", "must be an object or null");
            return None;
        }
    };
    let short = Len { min: 1, max: 200 };
    let line1 = a.string("line1", true, short);
    let line2 = a.string("line2", false, short);
    let city = a.string("city", true, short);
    let postal_code = a.string("postal_code", true, Len { min: 1, max: 20 });
    let country = a.string("country", true, Len { min: 2, max: 2 });
    if let Some(c) = &country
        && !c.bytes().all(|b| b.is_ascii_uppercase())
    {
        a.errors.push(
            "country",
            "must be an ISO 3166-1 alpha-2 code such as \"DE\"",
        );
    }
    a.deny_unknown();
    for e in a.errors.0 {
        r.errors
            .push(format!("shipping_address.{}", e.field), e.message);
    }
    Some(Address {
        line1: line1?,
        line2,
        city: city?,
        postal_code: postal_code?,
        country: country?,
    })
}

/// Deletes the caller's account and signs them out everywhere.
#[utoipa::path(delete, path = "/api/me", tag = "me", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::Problem)))]
pub async fn delete_me(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    let user = load(&state, &caller).await?;
    match state.users.delete(&user).await {
        Ok(()) | Err(UserError::NotFound) => Ok(StatusCode::NO_CONTENT),
        Err(UserError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
