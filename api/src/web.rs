//! The web storefront (`/`) and the operations dashboard (`/dashboard`):
//! static files embedded in the binary at build time (`api/web/`), served
//! with a strong `ETag`, `Cache-Control: no-cache` (the browser keeps them
//! and revalidates, so a new binary's files are seen at once) and a strict
//! Content-Security-Policy: scripts, styles and connections only from this
//! origin, no inline script, no framing. The pages use only the public API
//! and `/ws`.

use std::{collections::HashMap, sync::OnceLock};

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use include_dir::{Dir, include_dir};
use sha2::{Digest, Sha256};

use crate::{AppState, error::ApiError};

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web");

/// The policy every page and file is served with. Images may come from an
/// S3 bucket (`https:`) or be previews of a file being uploaded (`blob:`).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob: https:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(storefront))
        .route("/dashboard", get(dashboard))
        .route("/assets/{*path}", get(asset))
}

/// The ETag of each embedded file, computed once.
fn etags() -> &'static HashMap<&'static str, String> {
    static ETAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        let mut out = HashMap::new();
        let mut dirs = vec![&WEB];
        while let Some(d) = dirs.pop() {
            for f in d.files() {
                if let Some(p) = f.path().to_str() {
                    let digest = Sha256::digest(f.contents());
                    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                    out.insert(p, format!("\"{hex}\""));
                }
            }
            dirs.extend(d.dirs());
        }
        out
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let file = WEB.get_file(path).ok_or(ApiError::NotFound("file"))?;
    let etag = etags().get(path).cloned().unwrap_or_default();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(path))],
            file.contents(),
        )
            .into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    Ok(r)
}

/// The storefront.
async fn storefront(headers: HeaderMap) -> Result<Response, ApiError> {
    serve("index.html", &headers)
}

/// The operations dashboard (it asks an admin or a supplier to sign in).
async fn dashboard(headers: HeaderMap) -> Result<Response, ApiError> {
    serve("dashboard.html", &headers)
}

/// The pages' scripts, styles and images.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    if path.split('/').any(|s| s.is_empty() || s == "..") {
        return Err(ApiError::NotFound("file"));
    }
    serve(&format!("assets/{path}"), &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_its_assets_are_embedded() {
        for page in ["index.html", "dashboard.html"] {
            let html = WEB.get_file(page).expect(page).contents_utf8().unwrap();
            assert!(!html.contains("<script>"), "{page}: no inline script");
            for src in html
                .split("src=\"/assets/")
                .skip(1)
                .chain(html.split("href=\"/assets/").skip(1))
            {
                let path = &src[..src.find('"').unwrap()];
                assert!(
                    WEB.get_file(format!("assets/{path}")).is_some(),
                    "{page} names assets/{path}, which is not embedded"
                );
            }
        }
        assert!(etags().len() >= 4);
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(content_type("a/b.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
