//! Registration, login and token refresh.

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use domain::{
    Email, Role, User, UserId,
    user::check_password,
    validate::{FieldReader, Len},
};
use serde::Serialize;
use storage::users::UserError;
use uuid::Uuid;

use storage::users::Refreshed;

use crate::{
    AppState,
    auth::{TokenPair, hash_password, verify_password},
    error::{ApiError, ApiResult},
    extract::JsonBody,
    limits::ClientIp,
    routes::me::UserView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
}

const PASSWORD_LEN: Len = Len { min: 1, max: 1024 };
pub(crate) const NAME_LEN: Len = Len { min: 1, max: 200 };

/// Body of `POST /api/auth/register`.
#[derive(Debug, utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body, which is read field by field to report every error"
)]
pub struct RegisterRequest {
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\u0000-\u001f\u007f-\u009f]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
    )]
    pub email: String,
    /// At least 12 characters.
    #[schema(
        min_length = 12,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub password: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
}

/// Body of `POST /api/auth/login`.
#[derive(Debug, utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body, which is read field by field to report every error"
)]
pub struct LoginRequest {
    #[schema(
        min_length = 1,
        max_length = 254,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub email: String,
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub password: String,
}

/// Body of `POST /api/auth/refresh`.
#[derive(Debug, utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the body, which is read field by field to report every error"
)]
pub struct RefreshRequest {
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub refresh_token: String,
}

/// A new user and their first tokens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub user: UserView,
    #[serde(flatten)]
    pub tokens: TokenPair,
}

/// Creates a user with a hashed password. Shared by registration, the CLI and
/// the admin bootstrap.
pub async fn create_user(
    state: &AppState,
    email: Email,
    password: String,
    name: String,
    role: Role,
    supplier_id: Option<String>,
) -> ApiResult<User> {
    let now = domain::now();
    let user = User {
        id: UserId::new(),
        email,
        name,
        role,
        supplier_id,
        password_hash: hash_password(&state.limits, password).await?,
        identity: None,
        shipping_address: None,
        preferences: Default::default(),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    match state.users.create(&user).await {
        Ok(()) => Ok(user),
        Err(UserError::DuplicateEmail) => Err(ApiError::Conflict(format!(
            "a user with e-mail address {} exists",
            user.email
        ))),
        Err(UserError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// A new token pair; its refresh token starts a family (a sign-in) or
/// joins `family` (a refresh: the family's id and when its sign-in was).
async fn issue(
    state: &AppState,
    user: &User,
    family: Option<(&str, time::OffsetDateTime)>,
) -> ApiResult<TokenPair> {
    issue_for(state, user, family, state.tokens.refresh_ttl).await
}

/// [`issue`], with a refresh token that lives `refresh_ttl`.
pub(crate) async fn issue_for(
    state: &AppState,
    user: &User,
    family: Option<(&str, time::OffsetDateTime)>,
    refresh_ttl: std::time::Duration,
) -> ApiResult<TokenPair> {
    let refresh_id = Uuid::new_v4().simple().to_string();
    let now = domain::now();
    let (family, signed_in_at) = family.unwrap_or((&refresh_id, now));
    state
        .users
        .store_refresh(
            user.id,
            &refresh_id,
            family,
            signed_in_at,
            now + refresh_ttl,
        )
        .await?;
    state.tokens.issue(
        user.id,
        user.role,
        user.supplier_id.clone(),
        &refresh_id,
        refresh_ttl,
    )
}

/// Registers a customer. Like a login, it folds the anonymous session of
/// `X-Session-Id` (or the session cookie) into the new user.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = Registered),
        (status = 409, description = "e-mail address taken", body = crate::Problem),
        (status = 422, description = "invalid fields", body = crate::Problem),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    state.limits.auth_address(ip)?;
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let email = r.string("email", true, Len { min: 1, max: 254 });
    let password = r.untrimmed("password").map(str::to_owned);
    let name = r.string("name", true, NAME_LEN);
    r.deny_unknown();
    let mut errors = r.errors;
    let email = email.and_then(|e| Email::parse(&e).map_err(|m| errors.push("email", m)).ok());
    if let Some(p) = &password
        && let Err(m) = check_password(p)
    {
        errors.push("password", m);
    }
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(ApiError::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let user = create_user(&state, email, password, name, Role::Customer, None).await?;
    // What the visitor browsed and basketed before registering is theirs.
    merge_session(&state, &headers, &user).await;
    let tokens = issue(&state, &user, None).await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            user: UserView::from(&user),
            tokens,
        }),
    ))
}

/// Exchanges an e-mail address and password for tokens.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "wrong e-mail address or password", body = crate::Problem),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TokenPair>> {
    state.limits.auth_address(ip)?;
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let email = r.string("email", true, Len { min: 1, max: 254 });
    // A password is taken as typed: never trimmed.
    let password = match r.untrimmed("password") {
        Some(p)
            if (PASSWORD_LEN.min..=PASSWORD_LEN.max).contains(&p.chars().count())
                && !p.chars().any(char::is_control) =>
        {
            Some(p.to_owned())
        }
        Some(_) => {
            r.errors.push(
                "password",
                format!(
                    "must be {} to {} characters, without control characters",
                    PASSWORD_LEN.min, PASSWORD_LEN.max
                ),
            );
            None
        }
        None => None,
    };
    r.deny_unknown();
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::Validation(r.errors));
    };
    if !r.errors.is_empty() {
        return Err(ApiError::Validation(r.errors));
    }
    state.limits.auth_account(&email)?;
    let user = match Email::parse(&email) {
        Ok(e) => state.users.find_by_email(&e).await?,
        Err(_) => None,
    };
    let ok = verify_password(
        &state.limits,
        password,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await?;
    match user {
        Some(user) if ok => {
            merge_session(&state, &headers, &user).await;
            Ok(Json(issue(&state, &user, None).await?))
        }
        _ => Err(ApiError::Unauthorized("wrong e-mail address or password")),
    }
}

/// Folds the anonymous session named in `X-Session-Id` (or the session
/// cookie) into the user's behaviour and basket, so what they browsed and
/// basketed before signing in still counts. A failure is logged, never fails
/// the sign-in.
pub(crate) async fn merge_session(state: &AppState, headers: &axum::http::HeaderMap, user: &User) {
    let session = headers
        .get(crate::routes::events::SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_owned)
        .or_else(|| crate::routes::basket::session_of(headers).ok().flatten());
    let Some(session) = session else {
        return;
    };
    let from = domain::Subject::Session(session.clone()).key();
    let into = domain::Subject::User(user.id.to_string()).key();
    if let Err(e) = state.tables.merge_profiles(&from, &into).await {
        tracing::warn!(error = %e, "could not merge the session's behaviour into the user's");
    }
    if let Err(e) = state.shop.merge_baskets(&from, &into).await {
        tracing::warn!(error = %e, "could not merge the session's basket into the user's");
    }
}

/// Exchanges a refresh token for a new pair. Each refresh token works once;
/// one used a second time (stolen and replayed, or replayed by the thief's
/// victim) revokes every refresh token of its sign-in.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "invalid, expired or used refresh token", body = crate::Problem),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TokenPair>> {
    state.limits.auth_address(ip)?;
    let mut r = FieldReader::new(&body).map_err(ApiError::Validation)?;
    let token = r.string("refresh_token", true, Len { min: 1, max: 4096 });
    r.deny_unknown();
    let Some(token) = token.filter(|_| r.errors.is_empty()) else {
        return Err(ApiError::Validation(r.errors));
    };
    let (user_id, jti) = state.tokens.verify_refresh(&token)?;
    state.limits.auth_account(&user_id.to_string())?;
    let now = domain::now();
    let (family, signed_in_at) = match state.users.consume_refresh(user_id, &jti, now).await? {
        Refreshed::Fresh {
            family,
            signed_in_at,
        } => (family, signed_in_at),
        Refreshed::Reused => {
            metrics::counter!("shopstream_refresh_reuse_total").increment(1);
            tracing::warn!(user = %user_id, "a refresh token was used twice; its family is revoked");
            return Err(ApiError::Unauthorized(
                "this refresh token was used before: every refresh token of this sign-in is revoked; sign in again",
            ));
        }
        Refreshed::Invalid => {
            return Err(ApiError::Unauthorized(
                "invalid, expired or revoked refresh token",
            ));
        }
    };
    let user = state
        .users
        .get(user_id)
        .await?
        .ok_or(ApiError::Unauthorized("the account no longer exists"))?;
    // An account of the external issuer's keeps the role and supplier of
    // its last sign-in there: it goes back to the issuer (which has the
    // current groups) once the sign-in is `oidc_session` old.
    let signed_in_at = signed_in_at.unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    if user.identity.is_some() && now - signed_in_at > state.config.oidc_session {
        return Err(ApiError::Unauthorized(
            "this sign-in through the identity provider has ended; sign in there again",
        ));
    }
    Ok(Json(
        issue(&state, &user, Some((&family, signed_in_at))).await?,
    ))
}
