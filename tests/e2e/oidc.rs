//! The pages' sign-in through an external issuer (OpenID Connect code flow
//! with PKCE) against an identity provider on loopback that checks what a
//! real one checks: the client's secret, the redirect URI, the PKCE
//! verifier, one use per code.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{App, Backend, Env, fixture},
    on_both_backends,
};

const CLIENT_ID: &str = "shopstream-pages";
const CLIENT_SECRET: &str = "the client's secret";
const PUBLIC_URL: &str = "http://localhost:8080";

/// A code the provider handed out: the claims its ID token will carry and
/// what the exchange must match.
#[derive(Clone)]
struct Grant {
    claims: Value,
    challenge: String,
    redirect_uri: String,
}

/// The identity provider: discovery, keys, and a token endpoint.
struct Provider {
    issuer: String,
    grants: Arc<Mutex<HashMap<String, Grant>>>,
}

async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let grants: Arc<Mutex<HashMap<String, Grant>>> = Arc::default();
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "end_session_endpoint": format!("{issuer}/logout"),
    });
    let taken = grants.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/.well-known/jwks.json",
            axum::routing::get(
                move || async move { ([("content-type", "application/json")], jwks) },
            ),
        )
        .route(
            "/oauth2/token",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let grants = taken.clone();
                async move { token_endpoint(&grants, &headers, &body) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Provider { issuer, grants }
}

/// RFC 6749 §4.1.3 and RFC 7636 §4.6, as Cognito's token endpoint does them.
fn token_endpoint(
    grants: &Mutex<HashMap<String, Grant>>,
    headers: &axum::http::HeaderMap,
    body: &str,
) -> (StatusCode, axum::Json<Value>) {
    let refuse = |e: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e})));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{CLIENT_ID}:{}",
            CLIENT_SECRET.replace(' ', "+").replace('\'', "%27")
        ))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return refuse("invalid_client");
    }
    let form: HashMap<String, String> = Url::parse(&format!("http://x/?{body}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code")
        || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        return refuse("invalid_request");
    }
    // A code works once.
    let Some(grant) = form
        .get("code")
        .and_then(|c| grants.lock().unwrap().remove(c))
    else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return refuse("invalid_grant");
    }
    (
        StatusCode::OK,
        axum::Json(json!({
            "id_token": sign(&grant.claims),
            "access_token": "an access token the service does not use",
            "token_type": "Bearer",
            "expires_in": 3600,
        })),
    )
}

fn sign(claims: &Value) -> String {
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwks_test_key.pem")).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A browser: no redirects followed, cookies carried by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// What `/api/auth/oidc/login` sent the browser to, and the flow's cookie.
struct Started {
    params: HashMap<String, String>,
    cookie: String,
}

async fn start(app: &App, provider: &Provider, page: &str) -> Started {
    let r = browser()
        .get(app.url(&format!("/api/auth/oidc/login?page={page}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        location.as_str().split('?').next().unwrap(),
        format!("{}/oauth2/authorize", provider.issuer)
    );
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/api/auth/oidc"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    Started {
        params: location.query_pairs().into_owned().collect(),
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
    }
}

/// The provider signs the user in: a code for `claims` (with the nonce of
/// this sign-in unless the claims name one).
fn authorize(provider: &Provider, started: &Started, mut claims: Value) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let defaults = json!({
        "iss": provider.issuer, "aud": CLIENT_ID, "token_use": "id",
        "iat": now, "exp": now + 3600, "nonce": started.params["nonce"],
        "email_verified": "true",
    });
    for (k, v) in defaults.as_object().unwrap() {
        if claims.get(k).is_none() {
            claims[k] = v.clone();
        }
    }
    let code = uuid::Uuid::new_v4().to_string();
    provider.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            claims,
            challenge: started.params["code_challenge"].clone(),
            redirect_uri: started.params["redirect_uri"].clone(),
        },
    );
    code
}

/// The provider sends the browser back; where the service sends it then.
async fn back(app: &App, query: &str, cookie: Option<&str>) -> String {
    let mut req = browser().get(app.url(&format!("/api/auth/oidc/callback?{query}")));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "the flow's cookie is cleared"
    );
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// A full sign-in: the page it lands on and the fragment's value.
async fn sign_in(app: &App, provider: &Provider, page: &str, claims: Value) -> (String, String) {
    let started = start(app, provider, page).await;
    let code = authorize(provider, &started, claims);
    let location = back(
        app,
        &format!("code={code}&state={}", started.params["state"]),
        Some(&started.cookie),
    )
    .await;
    let (path, fragment) = location.split_once('#').unwrap();
    (path.to_owned(), fragment.to_owned())
}

/// The page's half: the one-time refresh token for the service's tokens
/// (access, refresh) and the profile.
async fn exchange(app: &App, fragment: &str) -> (String, String, Value) {
    let handoff = fragment
        .strip_prefix("oidc=")
        .unwrap_or_else(|| panic!("signed in: {fragment}"));
    let r = app.refresh(handoff).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    let refresh = r.body["refresh_token"].as_str().unwrap().to_owned();
    let me = app.call(Method::GET, "/api/me", Some(&access), None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    (access, refresh, me.body)
}

async fn pages_sign_in_through_the_issuer(backend: Backend) {
    let provider = provider().await;
    let env = Env::new(backend)
        .set(
            "SHOPSTREAM_JWKS_URL",
            &format!("{}/.well-known/jwks.json", provider.issuer),
        )
        .set("SHOPSTREAM_JWKS_ISSUER", &provider.issuer)
        .set("SHOPSTREAM_JWKS_AUDIENCE", CLIENT_ID)
        .set("SHOPSTREAM_OIDC_CLIENT_ID", CLIENT_ID)
        .set("SHOPSTREAM_OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .set("SHOPSTREAM_PUBLIC_URL", PUBLIC_URL);
    let app = env.start().await;
    let info = app.get("/api/auth/oidc").await;
    assert_eq!(info.body["enabled"], true, "{}", info.text);

    // The request to the provider: the code flow, PKCE S256, our callback.
    let started = start(&app, &provider, "dashboard").await;
    let p = &started.params;
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["client_id"], CLIENT_ID);
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(
        p["redirect_uri"],
        format!("{PUBLIC_URL}/api/auth/oidc/callback")
    );
    assert!(p["scope"].split(' ').any(|s| s == "openid"));
    assert!(p["state"].len() >= 43 && p["nonce"].len() >= 43);

    // A supplier's first sign-in makes their account, with the supplier the
    // ID token names.
    let supplier = json!({"sub": "cognito-sub-1", "email": "sam@supplier.example",
        "name": "Sam", "cognito:groups": ["supplier"], "custom:supplier_id": "acme"});
    let code = authorize(&provider, &started, supplier.clone());
    let location = back(
        &app,
        &format!("code={code}&state={}", p["state"]),
        Some(&started.cookie),
    )
    .await;
    let (path, fragment) = location.split_once('#').unwrap();
    assert_eq!(path, "/dashboard");
    let (access, _, me) = exchange(&app, fragment).await;
    assert_eq!(me["email"], "sam@supplier.example");
    assert_eq!(me["role"], "supplier");
    assert_eq!(me["supplier_id"], "acme");
    let first_id = me["id"].clone();
    let alerts = app
        .call(Method::GET, "/api/supplier/alerts", Some(&access), None)
        .await;
    assert_eq!(alerts.status, StatusCode::OK, "{}", alerts.text);
    // The fragment's token works once: a second use is a theft, and ends
    // the sign-in.
    let replayed = app.refresh(fragment.strip_prefix("oidc=").unwrap()).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    // The code works once too.
    let again = back(
        &app,
        &format!("code={code}&state={}", p["state"]),
        Some(&started.cookie),
    )
    .await;
    assert!(again.contains("#oidc-error="), "{again}");
    // The account has no password.
    assert_eq!(
        app.login("sam@supplier.example", "").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.login("sam@supplier.example", "any password at all")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // The next sign-in finds the same account; the issuer's groups decide
    // the role.
    let promoted = json!({"sub": "cognito-sub-1", "email": "sam@supplier.example",
        "cognito:groups": ["admin", "supplier"]});
    let (path, fragment) = sign_in(&app, &provider, "storefront", promoted).await;
    assert_eq!(path, "/");
    let (_, admin_refresh, me) = exchange(&app, &fragment).await;
    assert_eq!(me["id"], first_id);
    assert_eq!(me["role"], "admin");
    assert!(me.get("supplier_id").is_none(), "{me}");

    // Refused, each with its reason, and no account made.
    let customer = |email: &str| json!({"sub": format!("sub-{email}"), "email": email});
    let admin_email = crate::helpers::ADMIN_EMAIL;
    for (what, claims, reason) in [
        (
            "an address a password account has",
            customer(admin_email),
            "exists here already",
        ),
        (
            "an address the provider has not verified",
            json!({"sub": "sub-unverified", "email": "new@example.com", "email_verified": "false"}),
            "has not verified",
        ),
        (
            "another sign-in's nonce",
            json!({"sub": "sub-nonce", "email": "nonce@example.com", "nonce": "not this one"}),
            "invalid ID token",
        ),
        (
            "another client's token",
            json!({"sub": "sub-aud", "email": "aud@example.com", "aud": "another-client"}),
            "invalid ID token",
        ),
        (
            "an access token",
            json!({"sub": "sub-access", "email": "access@example.com", "token_use": "access"}),
            "invalid ID token",
        ),
    ] {
        let (_, fragment) = sign_in(&app, &provider, "storefront", claims).await;
        let reason_in_page = Url::parse(&format!("http://x/?{fragment}"))
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "oidc-error")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("{what}: refused, got {fragment}"));
        assert!(reason_in_page.contains(reason), "{what}: {reason_in_page}");
    }
    assert_eq!(
        app.login(admin_email, crate::helpers::ADMIN_PASSWORD)
            .await
            .status,
        StatusCode::OK,
        "the password account is untouched"
    );

    // Login CSRF: a code and state from another browser's sign-in do not
    // sign this browser in.
    let victim = start(&app, &provider, "storefront").await;
    let attacker = start(&app, &provider, "storefront").await;
    let code = authorize(
        &provider,
        &attacker,
        json!({"sub": "attacker", "email": "a@example.com"}),
    );
    let location = back(
        &app,
        &format!("code={code}&state={}", attacker.params["state"]),
        Some(&victim.cookie),
    )
    .await;
    assert!(location.starts_with("/#oidc-error="), "{location}");
    let location = back(
        &app,
        &format!("code={code}&state={}", attacker.params["state"]),
        None,
    )
    .await;
    assert!(
        location.contains("expired%20or%20was%20started")
            || location.contains("expired+or+was+started"),
        "{location}"
    );
    // The provider's own refusal is passed on.
    let location = back(
        &app,
        &format!(
            "error=access_denied&error_description=cancelled&state={}",
            victim.params["state"]
        ),
        Some(&victim.cookie),
    )
    .await;
    assert!(location.contains("access_denied"), "{location}");
    // Signing out ends the session at the provider, and comes back to the
    // page.
    let r = browser()
        .get(app.url("/api/auth/oidc/logout?page=dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        to.as_str().split('?').next().unwrap(),
        format!("{}/logout", provider.issuer)
    );
    let q: HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!("{PUBLIC_URL}/dashboard")
    );
    let password_refresh = app
        .login(admin_email, crate::helpers::ADMIN_PASSWORD)
        .await
        .body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;

    // Past `oidc_session_secs` (8 h), the issuer's account goes back to the
    // issuer (which has its current groups) instead of refreshing; a
    // password account refreshes on.
    let later = env.clock_ahead(9 * 3600).start().await;
    let r = later.refresh(&admin_refresh).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(r.text.contains("sign in there again"), "{}", r.text);
    let r = later.refresh(&password_refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    later.stop().await;
}

/// Without the settings the pages see it off, and its routes are 404.
async fn without_an_issuer_the_routes_are_off(backend: Backend) {
    let app = Env::new(backend).start().await;
    let info = app.get("/api/auth/oidc").await;
    assert_eq!(info.body, json!({"enabled": false}));
    for path in [
        "/api/auth/oidc/login",
        "/api/auth/oidc/callback?code=x&state=y",
    ] {
        let r = app.send(browser().get(app.url(path))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let r = app
        .send(browser().get(app.url("/api/auth/oidc/login?page=elsewhere")))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.problem_fields(), ["page"]);
    app.stop().await;
}

on_both_backends!(
    pages_sign_in_through_the_issuer,
    without_an_issuer_the_routes_are_off,
);
