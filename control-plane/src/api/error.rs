//! The one error type of the REST API and its JSON form:
//! `{"error": {"code": "...", "message": "...", "fields": {...}}}`.
//!
//! Database and other internal errors are logged with their cause chain and answered with an
//! opaque 500: internal text never reaches a client.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domains::{FieldErrors, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this token is read-only")]
    ReadOnly,
    #[error("not found")]
    NotFound,
    /// The resource exists but has nothing recorded yet (404 with code `not_recorded`).
    #[error("{0}")]
    NotRecorded(String),
    #[error("validation failed")]
    Validation(BTreeMap<String, String>),
    #[error("{0}")]
    BadRequest(String),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Conflict(String),
    /// Too many requests; retry after this many seconds (429 with `Retry-After`).
    #[error("too many check tests; retry in {0} s")]
    RateLimited(u64),
    /// A tenant quota a write would exceed (422 with code `quota_exceeded`, the quota named
    /// as the field).
    #[error("{0}")]
    Quota(crate::quotas::Exceeded),
    /// Over the tenant's request rate (429 with code `rate_limited` and `Retry-After`).
    #[error("tenant quota: at most {} API requests per minute; retry in {} s", .0.per_minute, .0.retry_after_s)]
    RequestRate(crate::quotas::RateExceeded),
    /// Too many failed authentications from this client address or with this token prefix;
    /// retry after this many seconds (429 with `Retry-After`, no token looked up meanwhile).
    #[error("too many failed authentication attempts; retry in {0} s")]
    AuthThrottled(u64),
    /// Every live stream slot of this replica is taken (503 with code `unavailable` and
    /// `Retry-After`; counted by the live hub, not logged as a failure).
    #[error("{0}")]
    StreamsBusy(crate::live::Busy),
    /// A method the path does not serve (405 with code `method_not_allowed`).
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ReadOnly => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NotRecorded(_) => StatusCode::NOT_FOUND,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) | ApiError::AuthThrottled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Quota(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestRate(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::StreamsBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::ReadOnly => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::NotRecorded(_) => "not_recorded",
            ApiError::Validation(_) => "validation_failed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Quota(_) => "quota_exceeded",
            ApiError::RequestRate(_) => "rate_limited",
            ApiError::AuthThrottled(_) => "auth_throttled",
            ApiError::Unavailable(_) | ApiError::StreamsBusy(_) => "unavailable",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn validation(errors: FieldErrors) -> Self {
        ApiError::Validation(errors.0)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => ApiError::Unavailable(error.into()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                ApiError::Conflict("a resource with these values already exists".into())
            }
            _ => ApiError::Internal(error.into()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(fields) => ApiError::validation(fields),
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Database(e) => e.into(),
            StoreError::Quota(exceeded) => ApiError::Quota(exceeded),
        }
    }
}

impl From<crate::quotas::Error> for ApiError {
    fn from(error: crate::quotas::Error) -> Self {
        match error {
            crate::quotas::Error::Exceeded(exceeded) => ApiError::Quota(exceeded),
            crate::quotas::Error::Database(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) | ApiError::Unavailable(cause) = &self {
            tracing::error!(error = %shared::error::Chain(cause.as_ref()), status = status.as_u16(), "request failed");
        }
        let mut body = json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::Validation(fields) = &self {
            body["fields"] = json!(fields);
        }
        if let ApiError::Quota(exceeded) = &self {
            body["fields"] = json!({ exceeded.field: exceeded.message });
        }
        let mut response = (status, Json(json!({ "error": body }))).into_response();
        if let ApiError::RateLimited(seconds) | ApiError::AuthThrottled(seconds) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        if let ApiError::Quota(exceeded) = &self {
            response.extensions_mut().insert(super::gate::QuotaRefusal(exceeded.field));
        }
        if let ApiError::StreamsBusy(busy) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(busy.retry_after_s()));
        }
        if let ApiError::RequestRate(exceeded) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(exceeded.retry_after_s));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
