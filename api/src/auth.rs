//! Authentication: argon2id password hashes, our own HS256 access and refresh
//! tokens, and optionally RS256 tokens from an external issuer (Amazon
//! Cognito) verified against its JWKS.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use axum::{extract::FromRequestParts, http::request::Parts};
use domain::{Role, UserId};
use jsonwebtoken::{
    Algorithm as JwtAlg, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::limits::Limits;
use crate::{AppState, error::ApiError};

const ISSUER: &str = "shopstream";

/// argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn new_salt() -> Result<SaltString, ApiError> {
    SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| ApiError::Internal(format!("salt: {e}")))
}

/// Hashes a password on a blocking thread (it takes tens of milliseconds),
/// within the bound on concurrent hashes.
pub async fn hash_password(limits: &Limits, password: String) -> Result<String, ApiError> {
    let _permit = limits.hashing().await?;
    tokio::task::spawn_blocking(move || {
        let salt = new_salt()?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Checks a password against a stored hash, on a blocking thread, within
/// the bound on concurrent hashes. With no hash (unknown user) it hashes
/// anyway, so timing does not reveal whether an account exists.
pub async fn verify_password(
    limits: &Limits,
    password: String,
    hash: Option<String>,
) -> Result<bool, ApiError> {
    let _permit = limits.hashing().await?;
    Ok(tokio::task::spawn_blocking(move || match hash {
        Some(hash) => PasswordHash::new(&hash)
            .map(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false),
        None => {
            if let Ok(salt) = new_salt() {
                let _ = argon2().hash_password(password.as_bytes(), &salt);
            }
            false
        }
    })
    .await
    .unwrap_or(false))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TokenUse {
    Access,
    Refresh,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: i64,
    exp: i64,
    #[serde(rename = "use")]
    token_use: TokenUse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    supplier_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// Settings of the external (RS256, JWKS) verifier. The issuer and the
/// audience are required: a token is accepted only with `iss` equal to
/// `issuer`, and either `aud` equal to `audience` or, as Amazon Cognito's
/// access tokens carry it, `client_id` equal to `audience` with
/// `token_use` `access`.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    pub url: String,
    pub issuer: String,
    pub audience: String,
    /// The claim listing the user's groups (`cognito:groups`).
    pub groups_claim: String,
}

/// The signing keys and verifiers.
#[derive(Debug)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    jwks: Option<Jwks>,
}

#[derive(Debug)]
struct Jwks {
    settings: JwksSettings,
    http: reqwest::Client,
    keys: Fetched<JwkSet>,
    /// When an unknown `kid` last made us fetch the keys again.
    refetched: std::sync::Mutex<Option<Instant>>,
}

/// A JSON document of the external issuer (its keys, its OpenID
/// configuration), fetched when first needed and kept for `ttl`.
#[derive(Debug)]
pub(crate) struct Fetched<T> {
    url: String,
    ttl: Duration,
    /// What it is, for errors.
    what: &'static str,
    cache: RwLock<Option<(T, Instant)>>,
}

impl<T: serde::de::DeserializeOwned + Clone> Fetched<T> {
    pub(crate) fn new(url: String, ttl: Duration, what: &'static str) -> Self {
        Self {
            url,
            ttl,
            what,
            cache: RwLock::new(None),
        }
    }

    /// The document: kept, unless stale or `refresh`; else fetched now.
    pub(crate) async fn get(&self, http: &reqwest::Client, refresh: bool) -> Result<T, ApiError> {
        if !refresh
            && let Some((doc, at)) = self.cache.read().await.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(doc.clone());
        }
        let doc: T = http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ApiError::Unavailable(format!("cannot fetch {}: {e}", self.what)))?
            .json()
            .await
            .map_err(|e| ApiError::Unavailable(format!("bad {} document: {e}", self.what)))?;
        *self.cache.write().await = Some((doc.clone(), Instant::now()));
        Ok(doc)
    }
}

/// The claim naming a supplier user's supplier. Cognito puts custom
/// attributes in ID tokens, and in access tokens only through a pre-token
/// generation trigger.
const SUPPLIER_CLAIM: &str = "custom:supplier_id";

/// How long fetched keys are trusted before they are fetched again.
const JWKS_TTL: Duration = Duration::from_secs(600);
/// An unknown `kid` fetches the keys again at most this often, so tokens
/// with made-up key ids cannot make us flood the issuer.
const JWKS_REFETCH: Duration = Duration::from_secs(60);

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Our user id, or the external subject.
    pub subject: String,
    pub role: Role,
    pub supplier_id: Option<String>,
    /// Whether the token came from the external issuer (no local profile).
    pub external: bool,
}

impl Caller {
    pub fn user_id(&self) -> Option<UserId> {
        if self.external {
            None
        } else {
            self.subject.parse().ok()
        }
    }

    /// Refuses a caller without the role.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role.as_str()))
        }
    }
}

/// A freshly issued token pair.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl Tokens {
    pub fn new(
        secret: &[u8],
        access_ttl: Duration,
        refresh_ttl: Duration,
        jwks: Option<JwksSettings>,
    ) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            access_ttl,
            refresh_ttl,
            jwks: jwks.map(|settings| Jwks {
                keys: Fetched::new(settings.url.clone(), JWKS_TTL, "JWKS"),
                settings,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_default(),
                refetched: std::sync::Mutex::new(None),
            }),
        }
    }

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(JwtAlg::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing failed: {e}")))
    }

    /// An access token and a refresh token (whose id the caller stores).
    pub fn issue(
        &self,
        user: UserId,
        role: Role,
        supplier_id: Option<String>,
        refresh_id: &str,
        refresh_ttl: Duration,
    ) -> Result<TokenPair, ApiError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let access = Claims {
            sub: user.to_string(),
            iss: ISSUER.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            token_use: TokenUse::Access,
            role: Some(role),
            supplier_id,
            jti: None,
        };
        let refresh = Claims {
            sub: user.to_string(),
            iss: ISSUER.into(),
            iat: now,
            exp: now + refresh_ttl.as_secs() as i64,
            token_use: TokenUse::Refresh,
            role: None,
            supplier_id: None,
            jti: Some(refresh_id.to_owned()),
        };
        Ok(TokenPair {
            access_token: self.sign(&access)?,
            refresh_token: self.sign(&refresh)?,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }

    fn validation() -> Validation {
        let mut v = Validation::new(JwtAlg::HS256);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        v
    }

    /// The user and refresh-token id in a refresh token.
    pub fn verify_refresh(&self, token: &str) -> Result<(UserId, String), ApiError> {
        let invalid = ApiError::Unauthorized("invalid or expired refresh token");
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &Self::validation())
            .map_err(|_| ApiError::Unauthorized("invalid or expired refresh token"))?;
        let c = data.claims;
        match (c.token_use, c.jti, c.sub.parse()) {
            (TokenUse::Refresh, Some(jti), Ok(user)) => Ok((user, jti)),
            _ => Err(invalid),
        }
    }

    /// Verifies an access token: ours (HS256), or the external issuer's (RS256).
    pub async fn verify_access(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid or expired access token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        match header.alg {
            JwtAlg::HS256 => {
                let data =
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &Self::validation())
                        .map_err(|_| invalid())?;
                let c = data.claims;
                match (c.token_use, c.role) {
                    (TokenUse::Access, Some(role)) => Ok(Caller {
                        subject: c.sub,
                        role,
                        supplier_id: c.supplier_id,
                        external: false,
                    }),
                    _ => Err(invalid()),
                }
            }
            JwtAlg::RS256 => match &self.jwks {
                Some(jwks) => jwks.verify(token, header.kid.as_deref()).await,
                None => Err(invalid()),
            },
            _ => Err(invalid()),
        }
    }
}

impl Jwks {
    async fn keys(&self, refresh: bool) -> Result<JwkSet, ApiError> {
        self.keys.get(&self.http, refresh).await
    }

    /// The key a token names (fetching the keys again, at most once a
    /// minute, when the `kid` is unknown: keys rotate), and the checks every
    /// token of the issuer passes: RS256, `iss`, `exp`, `sub`.
    async fn key(&self, kid: Option<&str>) -> Result<(DecodingKey, Validation), ApiError> {
        let invalid = || ApiError::Unauthorized("invalid or expired access token");
        let kid = kid.ok_or_else(invalid)?;
        let mut set = self.keys(false).await?;
        if set.find(kid).is_none() {
            let due = {
                let mut last = self.refetched.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.is_none_or(|t| t.elapsed() >= JWKS_REFETCH);
                if due {
                    *last = Some(Instant::now());
                }
                due
            };
            if !due {
                return Err(invalid());
            }
            set = self.keys(true).await?;
        }
        let jwk = set.find(kid).ok_or_else(invalid)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid())?;
        let mut v = Validation::new(JwtAlg::RS256);
        v.leeway = 5;
        v.set_issuer(&[&self.settings.issuer]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        Ok((key, v))
    }

    async fn verify(&self, token: &str, kid: Option<&str>) -> Result<Caller, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid or expired access token");
        let (key, mut v) = self.key(kid).await?;
        // Checked below: `aud`, or Cognito's `client_id` with `token_use`.
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|_| invalid())?;
        let claims = data.claims;
        let audience = self.settings.audience.as_str();
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == audience,
            serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(audience)),
            _ => false,
        };
        let cognito_access =
            claims["client_id"].as_str() == Some(audience) && claims["token_use"] == "access";
        if !aud_ok && !cognito_access {
            return Err(invalid());
        }
        let subject = claims["sub"].as_str().ok_or_else(invalid)?.to_owned();
        Ok(Caller {
            subject,
            role: self.role(&claims),
            supplier_id: claims[SUPPLIER_CLAIM].as_str().map(str::to_owned),
            external: true,
        })
    }

    /// The role the groups claim names (the first of admin, service,
    /// supplier it lists), or customer.
    fn role(&self, claims: &serde_json::Value) -> Role {
        let groups: Vec<&str> = match &claims[self.settings.groups_claim.as_str()] {
            serde_json::Value::Array(a) => a.iter().filter_map(|g| g.as_str()).collect(),
            serde_json::Value::String(s) => s.split([',', ' ']).collect(),
            _ => Vec::new(),
        };
        [Role::Admin, Role::Service, Role::Supplier]
            .into_iter()
            .find(|r| groups.contains(&r.as_str()))
            .unwrap_or(Role::Customer)
    }
}

/// Who signed in through the external issuer, from a verified OpenID
/// Connect ID token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub role: Role,
    pub supplier_id: Option<String>,
}

impl Identity {
    /// The key the local account is linked by.
    pub fn key(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }
}

impl Tokens {
    /// Verifies an ID token from the external issuer's token endpoint
    /// (OpenID Connect Core §3.1.3.7): signed by one of its keys, its `iss`,
    /// `aud` naming `client_id` (and `azp` too when there are several
    /// audiences), unexpired, and carrying the `nonce` this sign-in sent.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Identity, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid ID token");
        let jwks = self.jwks.as_ref().ok_or_else(invalid)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != JwtAlg::RS256 {
            return Err(invalid());
        }
        // An unknown key is an invalid ID token here (the issuer being
        // unreachable stays what it is).
        let (key, mut v) = jwks.key(header.kid.as_deref()).await.map_err(|e| match e {
            ApiError::Unauthorized(_) => invalid(),
            e => e,
        })?;
        v.set_audience(&[client_id]);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|_| invalid())?
            .claims;
        if let serde_json::Value::Array(aud) = &claims["aud"]
            && aud.len() > 1
            && claims["azp"].as_str() != Some(client_id)
        {
            return Err(invalid());
        }
        // Cognito marks its ID tokens; an access token is not one.
        if claims["nonce"].as_str() != Some(nonce)
            || claims.get("token_use").is_some_and(|u| u != "id")
        {
            return Err(invalid());
        }
        let text = |name: &str| {
            claims[name]
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Identity {
            issuer: jwks.settings.issuer.clone(),
            subject: text("sub").ok_or_else(invalid)?,
            email: text("email"),
            // Cognito sends it as a string.
            email_verified: matches!(&claims["email_verified"], serde_json::Value::Bool(true))
                || claims["email_verified"] == "true",
            name: text("name"),
            role: jwks.role(&claims),
            supplier_id: text(SUPPLIER_CLAIM),
        })
    }

    /// Signs `value` for the browser to carry for `ttl` and give back
    /// (the OpenID Connect sign-in's state): it cannot be read as, or
    /// mistaken for, any other token of ours.
    pub fn seal<T: Serialize>(
        &self,
        purpose: &str,
        ttl: Duration,
        value: &T,
    ) -> Result<String, ApiError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let sealed = Sealed {
            iss: ISSUER.into(),
            aud: purpose.into(),
            exp: now + ttl.as_secs() as i64,
            value,
        };
        jsonwebtoken::encode(&Header::new(JwtAlg::HS256), &sealed, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing failed: {e}")))
    }

    /// What [`Tokens::seal`] signed for `purpose`, if `token` is that and
    /// unexpired.
    pub fn unseal<T: serde::de::DeserializeOwned>(&self, purpose: &str, token: &str) -> Option<T> {
        let mut v = Self::validation();
        v.set_audience(&[purpose]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<Sealed<T>>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims.value)
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed<T> {
    iss: String,
    aud: String,
    exp: i64,
    value: T,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        state.tokens.verify_access(token).await
    }
}

/// The caller, if a valid token was sent.
#[derive(Debug)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            None => Ok(Self(None)),
            Some(token) => state
                .tokens
                .verify_access(token)
                .await
                .map(|c| Self(Some(c))),
        }
    }
}

pub type SharedTokens = Arc<Tokens>;
