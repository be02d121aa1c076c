//! What the load generators share.

use serde_json::{Value, json};

/// Signs in and returns the access token.
pub async fn login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> String {
    let r: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().expect("admin login").to_owned()
}
