//! Product images: uploaded by an admin, checked by their content, kept in
//! the blob storage (the data directory, or S3 with `images_bucket`) and
//! served with caching headers.

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::put,
};
use domain::{ProductId, Role};
use sha2::{Digest, Sha256};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    routes::products::write,
};

pub fn router(max_bytes: usize) -> Router<AppState> {
    Router::new().route(
        "/api/products/{id}/image",
        put(put_image)
            .get(get_image)
            .layer(DefaultBodyLimit::max(max_bytes)),
    )
}

/// What the bytes are, by their first bytes (never by a name or a header).
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn key_of(id: ProductId) -> String {
    format!("images/{id}")
}

/// Uploads a product's image (admin): JPEG, PNG or WebP, checked by
/// content; at most `image_max_bytes`. Sets the product's `image_url`.
#[utoipa::path(put, path = "/api/products/{id}/image", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body(content = Vec<u8>, content_type = "image/*"),
    responses((status = 200, body = domain::Product), (status = 404, body = crate::Problem),
        (status = 413, body = crate::Problem), (status = 415, body = crate::Problem)))]
pub async fn put_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let limit = state.config.image_max_bytes;
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::MalformedJson(r.body_text())
        }
    })?;
    let pid: ProductId = id.parse().map_err(|_| ApiError::NotFound("product"))?;
    if state.products.get(pid).await?.is_none() {
        return Err(ApiError::NotFound("product"));
    }
    if bytes.is_empty() {
        return Err(ApiError::UnsupportedMedia(
            "the body is empty; send a JPEG, PNG or WebP image".into(),
        ));
    }
    let Some(kind) = sniff(&bytes) else {
        return Err(ApiError::UnsupportedMedia(
            "the body is not a JPEG, PNG or WebP image (checked by its content)".into(),
        ));
    };
    let tag: String = Sha256::digest(&bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    state.blobs.put(&key_of(pid), bytes.to_vec(), kind).await?;
    let url = format!("/api/products/{pid}/image?v={tag}");
    write(&state, &id, &headers, move |p| {
        p.image_url = Some(url.clone())
    })
    .await
}

/// Serves a product's image, cacheable (`ETag`, `Cache-Control`).
#[utoipa::path(get, path = "/api/products/{id}/image", tag = "products",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "image/*", body = Vec<u8>), (status = 304), (status = 404, body = crate::Problem)))]
pub async fn get_image(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let pid: ProductId = id.parse().map_err(|_| ApiError::NotFound("image"))?;
    let bytes = state
        .blobs
        .get(&key_of(pid))
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    let kind = sniff(&bytes).unwrap_or("application/octet-stream");
    let tag: String = Sha256::digest(&bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let etag = format!("\"{tag}\"");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, bytes).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn images_are_known_by_their_first_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b"<svg"), None);
        assert_eq!(sniff(b"RIFF\x10\0\0\0WAVE"), None);
    }
}
