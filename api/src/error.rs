//! One error type for the API and its one mapping to RFC 9457 problem
//! responses (`application/problem+json`).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use domain::{FieldError, ValidationErrors};
use serde::Serialize;
use storage::StoreError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Validation(ValidationErrors),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the resource changed: version {current} is current")]
    PreconditionFailed { current: u64 },
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error("not enough stock for {} product(s); see shortages", .0.len())]
    OutOfStock(Vec<commerce::Shortage>),
    /// The payment did not go through; the order exists with status
    /// `payment_failed` and its stock is released.
    #[error("{message}")]
    Payment {
        status: StatusCode,
        order_id: String,
        message: String,
    },
    #[error("{0}")]
    UnsupportedMedia(String),
    /// Over a rate limit: answered `429` with `Retry-After`.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// Over a concurrency bound (password hashing): `503` with
    /// `Retry-After`.
    #[error("{detail}")]
    Busy {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// The request is well-formed but what it asks cannot be done with the
    /// data there is (e.g. training on too little behaviour).
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(ValidationErrors::single(field, message))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OutOfStock(_) => StatusCode::CONFLICT,
            ApiError::Payment { status, .. } => *status,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed-json",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::Validation(_) => "validation",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed { .. } => "precondition-failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::OutOfStock(_) => "out-of-stock",
            ApiError::Payment { .. } => "payment-failed",
            ApiError::UnsupportedMedia(_) => "unsupported-media-type",
            ApiError::TooManyRequests { .. } => "too-many-requests",
            ApiError::Busy { .. } => "busy",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::ItemTooLarge { .. } => ApiError::field("", e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ingest::PublishError> for ApiError {
    fn from(e: ingest::PublishError) -> Self {
        match e {
            ingest::PublishError::Store(e) => e.into(),
            e @ ingest::PublishError::Truncated { .. } => ApiError::Conflict(e.to_string()),
            e => ApiError::Unavailable(format!("the stream did not take the records: {e}")),
        }
    }
}

impl From<serving::TrainError> for ApiError {
    fn from(e: serving::TrainError) -> Self {
        use serving::TrainError;
        match e {
            TrainError::Busy => ApiError::Conflict(e.to_string()),
            TrainError::Fit(e @ recommender::model::FitError::TooLittleData { .. }) => {
                ApiError::Unprocessable(e.to_string())
            }
            TrainError::Store(e) => e.into(),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation problems: every field at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
    /// For `409 out-of-stock`: each product checkout could not cover.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shortages: Vec<commerce::Shortage>,
    /// For payment problems: the order that was not paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) | ApiError::Unavailable(detail) = &self {
            tracing::error!(status = status.as_u16(), %detail, "request failed");
        }
        let detail = match &self {
            // Internal details stay in the log.
            ApiError::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            ApiError::Unavailable(_) => {
                "a service this request needs is unavailable; try again later (the cause is logged)"
                    .to_owned()
            }
            ApiError::Validation(_) => "the request has invalid fields; see errors".to_owned(),
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Validation(ref v) => v.0.clone(),
            _ => Vec::new(),
        };
        let order_id = match &self {
            ApiError::Payment { order_id, .. } => Some(order_id.clone()),
            _ => None,
        };
        let shortages = match self {
            ApiError::OutOfStock(ref s) => s.clone(),
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            shortages,
            order_id,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::TooManyRequests { retry_after, .. } | ApiError::Busy { retry_after, .. } =
            &self
        {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
