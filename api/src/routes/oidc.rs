//! Signing in to the storefront and the dashboard through the external
//! issuer (Amazon Cognito's hosted UI, or any OpenID Connect provider): the
//! authorization code flow with PKCE, run by the server.
//!
//! 1. `GET /api/auth/oidc/login?page=…` sends the browser to the issuer's
//!    authorization endpoint with a fresh `state`, `nonce` and PKCE
//!    challenge, which travel in a signed, HttpOnly cookie bound to this
//!    browser (no server-side session: any instance finishes the flow).
//! 2. The issuer sends the browser back to `GET /api/auth/oidc/callback`
//!    with a code. The server checks `state` against the cookie, exchanges
//!    the code (with the PKCE verifier and the client secret) at the token
//!    endpoint and verifies the ID token (keys, `iss`, `aud`, `nonce`).
//! 3. The identity (`iss` and `sub`) is linked to a local account, made on
//!    the first sign-in; its role and supplier follow the issuer's groups
//!    and `custom:supplier_id` at every sign-in. Only the ID token carries
//!    those, which is why the browser cannot do this with an access token.
//! 4. The browser is sent back to the page with a one-time, two-minute
//!    refresh token in the URL fragment (never sent to a server or in a
//!    `Referer`); the page exchanges it at `/api/auth/refresh` at once for
//!    the service's own tokens, as after a password sign-in. A replayed
//!    fragment is a reused refresh token: it revokes the sign-in.
//!
//! An existing password account is never linked by e-mail address: the
//! first sign-in through the issuer with that address is refused (the owner
//! signs in with the password), so that whoever controls an address at the
//! issuer cannot take over an account here.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use domain::{Email, User, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::users::UserError;

use crate::{
    AppState,
    auth::{Fetched, Identity},
    error::{ApiError, ApiResult},
    limits::ClientIp,
    routes::params::Params,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/oidc", get(info))
        .route("/api/auth/oidc/login", get(login))
        .route("/api/auth/oidc/callback", get(callback))
        .route("/api/auth/oidc/logout", get(logout))
}

/// The external issuer's client settings.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: String,
    pub client_id: String,
    /// Sent to the token endpoint (HTTP Basic) when the client has one.
    pub client_secret: Option<SecretString>,
    /// `{public_url}/api/auth/oidc/callback`, registered with the issuer.
    pub redirect_url: String,
    /// The address browsers reach the service at, without a trailing `/`
    /// (where the issuer's sign-out sends them back to).
    pub public_url: String,
}

/// The client: its settings and the issuer's endpoints, discovered once an
/// hour.
#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    discovery: Fetched<Discovery>,
}

#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
    /// OpenID Connect RP-Initiated Logout; Cognito has none (see
    /// [`end_session`]).
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

/// Where to send the browser to end its session at the issuer, coming back
/// to `back`: the issuer's `end_session_endpoint` (OpenID Connect
/// RP-Initiated Logout), or Cognito's `/logout` beside its
/// `/oauth2/authorize` (with Cognito's own parameter names). `None` when the
/// issuer offers neither.
fn end_session(d: &Discovery, client_id: &str, back: &str) -> Option<String> {
    let (endpoint, back_param) = match &d.end_session_endpoint {
        Some(e) => (e.clone(), "post_logout_redirect_uri"),
        None => (
            format!(
                "{}/logout",
                d.authorization_endpoint.strip_suffix("/oauth2/authorize")?
            ),
            "logout_uri",
        ),
    };
    let query = serde_urlencoded::to_string([("client_id", client_id), (back_param, back)]).ok()?;
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Some(format!("{endpoint}{sep}{query}"))
}

const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long the browser has to sign in at the issuer.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// How long the page has to exchange the refresh token it is handed.
const HANDOFF_TTL: Duration = Duration::from_secs(120);
const COOKIE: &str = "shopstream_oidc";
const PURPOSE: &str = "shopstream-oidc-flow";

impl Oidc {
    pub fn new(settings: OidcSettings) -> Self {
        Self {
            discovery: Fetched::new(
                settings.discovery_url.clone(),
                DISCOVERY_TTL,
                "the OpenID configuration",
            ),
            settings,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    async fn discovery(&self) -> Result<Discovery, ApiError> {
        self.discovery.get(&self.http, false).await
    }

    /// Exchanges the code for the ID token (RFC 6749 §4.1.3, RFC 7636 §4.5).
    async fn exchange(&self, code: &str, verifier: &str) -> Result<String, String> {
        let endpoint = self
            .discovery()
            .await
            .map_err(|e| e.to_string())?
            .token_endpoint;
        let form = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.settings.redirect_url.as_str()),
            ("client_id", self.settings.client_id.as_str()),
            ("code_verifier", verifier),
        ])
        .map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .post(endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(form);
        if let Some(secret) = &self.settings.client_secret {
            // RFC 6749 §2.3.1: both form-encoded, then Basic.
            let enc = |s: &str| {
                serde_urlencoded::to_string([("", s)])
                    .map(|p| p[1..].to_owned())
                    .unwrap_or_default()
            };
            req = req.basic_auth(
                enc(&self.settings.client_id),
                Some(enc(secret.expose_secret())),
            );
        }
        let r = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the token endpoint: {e}"))?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "the token endpoint refused the code ({status}: {})",
                body["error"].as_str().unwrap_or("no error code")
            ));
        }
        body["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the token endpoint sent no ID token".to_owned())
    }
}

/// Whether the pages can sign in through the external issuer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OidcInfo {
    pub enabled: bool,
    /// Where to send the browser to sign in, with `?page=storefront` or
    /// `?page=dashboard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_url: Option<&'static str>,
}

/// Whether sign-in through the external issuer is configured.
#[utoipa::path(get, path = "/api/auth/oidc", tag = "auth",
    responses((status = 200, body = OidcInfo)))]
pub async fn info(State(state): State<AppState>) -> Json<OidcInfo> {
    let enabled = state.oidc.is_some();
    Json(OidcInfo {
        enabled,
        login_url: enabled.then_some("/api/auth/oidc/login"),
    })
}

/// The page a sign-in returns to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Page {
    #[default]
    Storefront,
    Dashboard,
}

impl Page {
    fn path(self) -> &'static str {
        match self {
            Page::Storefront => "/",
            Page::Dashboard => "/dashboard",
        }
    }
}

impl Page {
    /// The `page` query parameter (storefront when absent).
    fn take(p: &mut Params) -> Page {
        match p.take("page").as_deref() {
            None | Some("storefront") => Page::Storefront,
            Some("dashboard") => Page::Dashboard,
            Some(_) => {
                p.errors.push("page", "must be storefront or dashboard");
                Page::Storefront
            }
        }
    }
}

/// What the flow's cookie carries, signed.
#[derive(Debug, Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    page: Page,
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What sending the browser to the issuer takes: the page it returns to
/// (the `page` parameter, the only one), the client, the issuer's endpoints.
async fn page_and_issuer<'s>(
    state: &'s AppState,
    query: Option<&str>,
) -> ApiResult<(Page, &'s Oidc, Discovery)> {
    let mut p = Params::parse(query)?;
    let page = Page::take(&mut p);
    p.finish()?;
    let oidc = state
        .oidc
        .as_ref()
        .ok_or(ApiError::NotFound("external sign-in"))?;
    Ok((page, oidc, oidc.discovery().await?))
}

/// Sends the browser to the issuer to sign in.
#[utoipa::path(get, path = "/api/auth/oidc/login", tag = "auth",
    params(("page" = Option<Page>, Query, description = "the page to return to (storefront when absent)")),
    responses(
        (status = 303, description = "to the issuer's sign-in page; sets the flow's cookie",
            headers(("location" = String), ("set-cookie" = String))),
        (status = 404, description = "sign-in through an external issuer is not configured", body = crate::Problem),
        (status = 422, description = "an unknown page", body = crate::Problem),
        (status = 503, description = "the issuer cannot be reached", body = crate::Problem),
    ))]
pub async fn login(State(state): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let (page, oidc, discovery) = page_and_issuer(&state, q.as_deref()).await?;
    let flow = Flow {
        state: random(),
        nonce: random(),
        verifier: random(),
        page,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(flow.verifier.as_bytes()));
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", oidc.settings.client_id.as_str()),
        ("redirect_uri", oidc.settings.redirect_url.as_str()),
        ("scope", "openid email profile"),
        ("state", flow.state.as_str()),
        ("nonce", flow.nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let sep = if discovery.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{query}", discovery.authorization_endpoint);
    let sealed = state.tokens.seal(PURPOSE, FLOW_TTL, &flow)?;
    // SameSite=Lax: sent on the issuer's top-level redirect back, not on
    // a cross-site subrequest.
    let cookie = format!(
        "{COOKIE}={sealed}; Path=/api/auth/oidc; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        FLOW_TTL.as_secs()
    );
    redirect(&location, Some(&cookie))
}

/// Ends the browser's session at the issuer (so that the next "sign in"
/// there asks for the password again, as on a shared computer it must),
/// then back to the page. The page forgets its own tokens first.
#[utoipa::path(get, path = "/api/auth/oidc/logout", tag = "auth",
    params(("page" = Option<Page>, Query, description = "the page to return to (storefront when absent)")),
    responses(
        (status = 303, description = "to the issuer's sign-out, which comes back to the page (or straight to the page if the issuer has none)",
            headers(("location" = String))),
        (status = 404, description = "sign-in through an external issuer is not configured", body = crate::Problem),
        (status = 422, description = "an unknown page", body = crate::Problem),
        (status = 503, description = "the issuer cannot be reached", body = crate::Problem),
    ))]
pub async fn logout(State(state): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let (page, oidc, discovery) = page_and_issuer(&state, q.as_deref()).await?;
    let back = format!("{}{}", oidc.settings.public_url, page.path());
    let to = end_session(&discovery, &oidc.settings.client_id, &back);
    redirect(to.as_deref().unwrap_or(page.path()), None)
}

/// What the issuer sends back. Other parameters (some issuers add
/// `session_state` or `iss`) are ignored.
#[derive(Debug)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the issuer sends the browser back: finishes the sign-in and sends
/// the browser to its page, with `#oidc=<one-time refresh token>` or
/// `#oidc-error=<reason>`.
#[utoipa::path(get, path = "/api/auth/oidc/callback", tag = "auth",
    params(("code" = Option<String>, Query, description = "the authorization code"),
        ("state" = Option<String>, Query, description = "the `state` sent to the issuer"),
        ("error" = Option<String>, Query, description = "the issuer's error code, when it did not sign the user in"),
        ("error_description" = Option<String>, Query)),
    responses(
        (status = 303, description = "to the page, signed in (`#oidc=…`) or with the reason it failed (`#oidc-error=…`); clears the flow's cookie",
            headers(("location" = String), ("set-cookie" = String))),
        (status = 404, description = "sign-in through an external issuer is not configured", body = crate::Problem),
        (status = 422, description = "a malformed query string", body = crate::Problem),
        (status = 429, description = "too many sign-ins from this address", body = crate::Problem),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut p = Params::parse(q.as_deref())?;
    let oidc = state
        .oidc
        .as_ref()
        .ok_or(ApiError::NotFound("external sign-in"))?;
    state.limits.auth_address(ip)?;
    let params = CallbackParams {
        code: p.take("code"),
        state: p.take("state"),
        error: p.take("error"),
        error_description: p.take("error_description"),
    };
    let flow = crate::extract::cookie(&headers, COOKIE)
        .and_then(|c| state.tokens.unseal::<Flow>(PURPOSE, c));
    let page = flow.as_ref().map(|f| f.page).unwrap_or_default();
    let outcome = finish(&state, oidc, flow, params, &headers).await;
    let fragment = match &outcome {
        Ok(handoff) => format!("oidc={handoff}"),
        Err(reason) => {
            metrics::counter!("shopstream_oidc_signins_refused_total").increment(1);
            tracing::info!(reason = %reason, "an external sign-in was refused");
            let reason = serde_urlencoded::to_string([("", reason.as_str())])
                .map(|p| p[1..].to_owned())
                .unwrap_or_default();
            format!("oidc-error={reason}")
        }
    };
    let clear =
        format!("{COOKIE}=; Path=/api/auth/oidc; Max-Age=0; HttpOnly; Secure; SameSite=Lax");
    redirect(&format!("{}#{fragment}", page.path()), Some(&clear))
}

/// The flow's checks, the code exchange and the account: a one-time
/// refresh token, or why the sign-in failed, in words for the page.
async fn finish(
    state: &AppState,
    oidc: &Oidc,
    flow: Option<Flow>,
    params: CallbackParams,
    headers: &HeaderMap,
) -> Result<String, String> {
    if let Some(error) = &params.error {
        let detail = params.error_description.as_deref().unwrap_or("");
        return Err(format!(
            "the identity provider did not sign you in ({}{}{})",
            error.chars().take(64).collect::<String>(),
            if detail.is_empty() { "" } else { ": " },
            detail.chars().take(200).collect::<String>(),
        ));
    }
    let flow = flow.ok_or("the sign-in expired or was started in another browser; try again")?;
    // Login CSRF: the code must come back to the browser that asked.
    if params.state.as_deref() != Some(flow.state.as_str()) {
        return Err("the sign-in's state does not match; try again".into());
    }
    let code = params
        .code
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or("the identity provider sent no code")?;
    let id_token = oidc.exchange(&code, &flow.verifier).await?;
    let identity = state
        .tokens
        .verify_id_token(&id_token, &oidc.settings.client_id, &flow.nonce)
        .await
        .map_err(|e| e.to_string())?;
    let user = account(state, &identity).await?;
    crate::routes::auth::merge_session(state, headers, &user).await;
    let pair = crate::routes::auth::issue_for(state, &user, None, HANDOFF_TTL)
        .await
        .map_err(|e| e.to_string())?;
    metrics::counter!("shopstream_oidc_signins_total").increment(1);
    Ok(pair.refresh_token)
}

/// The local account the identity signs in as: linked earlier (its role
/// and supplier brought up to date), or made now.
async fn account(state: &AppState, identity: &Identity) -> Result<User, String> {
    let key = identity.key();
    let store = |e: storage::StoreError| format!("the account store failed: {e}");
    for _ in 0..5 {
        if let Some(mut user) = state.users.find_by_identity(&key).await.map_err(store)? {
            if user.role == identity.role && user.supplier_id == identity.supplier_id {
                return Ok(user);
            }
            let expected = user.version;
            user.role = identity.role;
            user.supplier_id.clone_from(&identity.supplier_id);
            user.version += 1;
            user.updated_at = domain::now();
            match state.users.update(&user, expected).await {
                Ok(()) => return Ok(user),
                Err(UserError::VersionMismatch) => continue,
                Err(e) => return Err(format!("the account store failed: {e}")),
            }
        }
        let email = identity
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .ok_or("the identity provider did not share a valid e-mail address")?;
        if !identity.email_verified {
            return Err(format!(
                "the identity provider has not verified {email}; verify it there first"
            ));
        }
        let now = domain::now();
        let user = User {
            id: UserId::new(),
            name: identity
                .name
                .clone()
                .unwrap_or_else(|| email.to_string())
                .chars()
                .take(200)
                .collect(),
            email,
            role: identity.role,
            supplier_id: identity.supplier_id.clone(),
            // No password signs in as this account.
            password_hash: String::new(),
            identity: Some(key.clone()),
            shipping_address: None,
            preferences: Default::default(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        match state.users.create(&user).await {
            Ok(()) => return Ok(user),
            // Two sign-ins at once: the other made it; take that one.
            Err(UserError::DuplicateIdentity) => continue,
            Err(UserError::DuplicateEmail) => {
                return Err(format!(
                    "an account with {} exists here already; sign in with its password",
                    user.email
                ));
            }
            Err(e) => return Err(format!("the account store failed: {e}")),
        }
    }
    Err("the account is being changed concurrently; try again".into())
}

fn redirect(location: &str, cookie: Option<&str>) -> ApiResult<Response> {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(c) = cookie {
        h.insert(
            header::SET_COOKIE,
            HeaderValue::from_str(c).map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_ends_at_the_issuers_endpoint_or_cognitos() {
        let d = |auth: &str, end: Option<&str>| Discovery {
            authorization_endpoint: auth.into(),
            token_endpoint: String::new(),
            end_session_endpoint: end.map(str::to_owned),
        };
        let back = "https://shop.example/dashboard";
        assert_eq!(
            end_session(
                &d(
                    "https://idp.example/authorize",
                    Some("https://idp.example/end")
                ),
                "c1",
                back
            )
            .unwrap(),
            "https://idp.example/end?client_id=c1&post_logout_redirect_uri=https%3A%2F%2Fshop.example%2Fdashboard"
        );
        assert_eq!(
            end_session(
                &d(
                    "https://shop.auth.eu-west-1.amazoncognito.com/oauth2/authorize",
                    None
                ),
                "c1",
                back
            )
            .unwrap(),
            "https://shop.auth.eu-west-1.amazoncognito.com/logout?client_id=c1&logout_uri=https%3A%2F%2Fshop.example%2Fdashboard"
        );
        assert_eq!(
            end_session(&d("https://idp.example/authorize", None), "c1", back),
            None
        );
    }

    #[test]
    fn pages_return_to_their_own_paths_only() {
        let page = |q: &str| {
            let mut p = Params::parse(Some(q)).unwrap();
            let page = Page::take(&mut p);
            p.finish().map(|()| page.path())
        };
        assert_eq!(page("page=dashboard").unwrap(), "/dashboard");
        assert_eq!(page("").unwrap(), "/");
        assert!(page("page=https://evil.example").is_err());
    }
}
