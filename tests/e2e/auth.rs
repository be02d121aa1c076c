//! Registration, login, tokens, the profile, roles and the external (JWKS)
//! verifier, over HTTP, on both backends.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    helpers::{Backend, Env, fixture, product},
    on_both_backends,
};

async fn register_login_refresh_profile(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;

    let bad = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": "not-an-email", "password": "short", "name": "", "extra": 1})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert_eq!(bad.problem_fields(), ["email", "extra", "name", "password"]);

    let (access, refresh, id) = app.customer("Ada@Example.com").await;
    let dup = app
        .call(Method::POST, "/api/auth/register", None,
            Some(json!({"email": "ada@example.COM", "password": "another long password", "name": "Impostor"})))
        .await;
    assert_eq!(
        dup.status,
        StatusCode::CONFLICT,
        "e-mail addresses are unique whatever their case"
    );

    let me = app.call(Method::GET, "/api/me", Some(&access), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], id.as_str());
    assert_eq!(me.body["email"], "ada@example.com");
    assert_eq!(me.body["role"], "customer");
    assert!(
        me.body.get("password_hash").is_none(),
        "the hash never leaves the server"
    );

    assert_eq!(
        app.login("ada@example.com", "wrong password!!")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("nobody@example.com", "a long enough password")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Signing in with the anonymous session's id folds its behaviour in.
    let with_session = app
        .send(
            app.http
                .post(app.url("/api/auth/login"))
                .header("x-session-id", "anon-1")
                .json(&json!({"email": "ada@example.com", "password": "a long enough password"})),
        )
        .await;
    assert_eq!(with_session.status, StatusCode::OK, "{}", with_session.text);
    let login = app.login("ADA@example.com", "a long enough password").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["token_type"], "Bearer");
    assert!(login.body["expires_in"].as_u64().unwrap() > 0);

    let patched = app
        .call(Method::PATCH, "/api/me", Some(&access), Some(json!({
            "name": "Ada Lovelace",
            "shipping_address": {"line1": "1 Analytical Way", "city": "London", "postal_code": "N1", "country": "GB"},
            "preferences": {"newsletter": "weekly"}
        })))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["name"], "Ada Lovelace");
    assert_eq!(patched.body["shipping_address"]["city"], "London");
    assert_eq!(patched.body["version"], 2);
    let bad_patch = app
        .call(
            Method::PATCH,
            "/api/me",
            Some(&access),
            Some(json!({
                "shipping_address": {"line1": "x", "country": "gb"}, "role": "admin"
            })),
        )
        .await;
    assert_eq!(bad_patch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad_patch.problem_fields(),
        [
            "role",
            "shipping_address.city",
            "shipping_address.country",
            "shipping_address.postal_code"
        ]
    );
    assert_eq!(
        app.call(Method::GET, "/api/me", Some(&access), None)
            .await
            .body["role"],
        "customer"
    );

    // A refresh token works once.
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    let new_access = refreshed.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::GET, "/api/me", Some(&new_access), None)
            .await
            .status,
        StatusCode::OK
    );
    let replay = app.refresh(&refresh).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    // An access token is not a refresh token.
    let wrong_kind = app.refresh(&new_access).await;
    assert_eq!(wrong_kind.status, StatusCode::UNAUTHORIZED);
    // The replay revoked the whole family: the token the first refresh gave
    // (which a thief may hold) no longer works either.
    let successor = refreshed.body["refresh_token"].as_str().unwrap().to_owned();
    let revoked = app.refresh(&successor).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "{}", revoked.text);
    assert!(revoked.text.contains("revoked"), "{}", revoked.text);
    // A new sign-in starts a family of its own, and rotates as before.
    let login = app.login("ada@example.com", "a long enough password").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let rotated = app
        .refresh(login.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let next_refresh = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::DELETE, "/api/me", Some(&new_access), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.login("ada@example.com", "a long enough password")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.call(Method::GET, "/api/me", Some(&new_access), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let after_delete = app.refresh(&next_refresh).await;
    assert_eq!(
        after_delete.status,
        StatusCode::UNAUTHORIZED,
        "deleting the account signs it out everywhere"
    );
    // The address can be registered again.
    app.customer("ada@example.com").await;
    app.stop().await;
}

async fn tokens_from_another_key_are_refused(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "iss": "shopstream", "iat": now, "exp": now + 600, "use": "access", "role": "admin"}),
        &EncodingKey::from_secret(b"some-other-secret-of-enough-length-000000"),
    )
    .unwrap();
    let r = app
        .call(
            Method::POST,
            "/api/products",
            Some(&forged),
            Some(product("F")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "iss": "shopstream", "iat": now - 7200, "exp": now - 3600, "use": "access", "role": "admin"}),
        &EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    if backend == Backend::Aws {
        // Same secret as the server: refused only because it expired.
        let r = app
            .call(
                Method::POST,
                "/api/products",
                Some(&expired),
                Some(product("F")),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    app.stop().await;
}

/// Serves the test JWKS on a free port, as an identity provider would.
/// A JWKS endpoint on loopback; counts the fetches.
async fn jwks_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = fetches.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { ([("content-type", "application/json")], jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/.well-known/jwks.json"), fetches)
}

const CLIENT_ID: &str = "shopstream-web";

/// A Cognito-style access token (`client_id`, `token_use`, no `aud`).
fn external_token(groups: &[&str], issuer: &str) -> String {
    external_token_with(
        json!({"iss": issuer, "client_id": CLIENT_ID, "token_use": "access", "cognito:groups": groups}),
        "test-key-1",
    )
}

fn external_token_with(claims: serde_json::Value, kid: &str) -> String {
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwks_test_key.pem")).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut all = json!({"sub": "cognito-user-1", "iat": now, "exp": now + 600});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    jsonwebtoken::encode(&header, &all, &key).unwrap()
}

async fn external_issuer_tokens_map_groups_to_roles(backend: Backend) {
    let (url, fetches) = jwks_server().await;
    let issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_test";
    // The issuer and the audience are required with a JWKS URL.
    let (code, _, err) = Env::new(backend)
        .set("SHOPSTREAM_JWKS_URL", &url)
        .set("SHOPSTREAM_JWKS_ISSUER", issuer)
        .run(&["serve"])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("jwks_audience"), "{err}");
    let env = Env::new(backend)
        .set("SHOPSTREAM_JWKS_URL", &url)
        .set("SHOPSTREAM_JWKS_ISSUER", issuer)
        .set("SHOPSTREAM_JWKS_AUDIENCE", CLIENT_ID);
    let app = env.start().await;

    let admin = external_token(&["admin"], issuer);
    let created = app
        .call(
            Method::POST,
            "/api/products",
            Some(&admin),
            Some(product("EXT-1")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let customer = external_token(&["shoppers"], issuer);
    let refused = app
        .call(
            Method::POST,
            "/api/products",
            Some(&customer),
            Some(product("EXT-2")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let other_issuer = external_token(&["admin"], "https://evil.example.com");
    let r = app
        .call(
            Method::POST,
            "/api/products",
            Some(&other_issuer),
            Some(product("EXT-3")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The audience: `aud`, or Cognito's `client_id` with token_use=access.
    let post = |token: String, sku: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/products",
                Some(&token),
                Some(product(sku)),
            )
            .await
            .status
        }
    };
    let with_aud = external_token_with(
        json!({"iss": issuer, "aud": CLIENT_ID, "cognito:groups": ["admin"]}),
        "test-key-1",
    );
    assert_eq!(post(with_aud, "EXT-4").await, StatusCode::CREATED);
    for (what, claims) in [
        (
            "another audience",
            json!({"iss": issuer, "aud": "another-app", "cognito:groups": ["admin"]}),
        ),
        (
            "an id token",
            json!({"iss": issuer, "client_id": CLIENT_ID, "token_use": "id", "cognito:groups": ["admin"]}),
        ),
        (
            "no audience",
            json!({"iss": issuer, "cognito:groups": ["admin"]}),
        ),
        (
            "no issuer",
            json!({"client_id": CLIENT_ID, "token_use": "access", "cognito:groups": ["admin"]}),
        ),
    ] {
        assert_eq!(
            post(external_token_with(claims, "test-key-1"), "EXT-5").await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    // Unknown key ids fetch the keys again at most once a minute.
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..5 {
        let token = external_token_with(
            json!({"iss": issuer, "client_id": CLIENT_ID, "token_use": "access"}),
            &format!("made-up-{i}"),
        );
        assert_eq!(post(token, "EXT-6").await, StatusCode::UNAUTHORIZED);
    }
    let refetched = fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(refetched <= 1, "{refetched} fetches for 5 unknown kids");

    // External users have no local profile.
    assert_eq!(
        app.call(Method::GET, "/api/me", Some(&customer), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

on_both_backends!(
    register_login_refresh_profile,
    tokens_from_another_key_are_refused,
    external_issuer_tokens_map_groups_to_roles,
);
