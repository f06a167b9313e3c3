//! The one error type every handler returns, rendered as DESIGN.md §3's JSON body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// Marks a response refused by a limit or cap (the setting's name), for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct LimitHit(pub &'static str);

/// What a 503 (a store, WeChat or hook outage) tells clients to wait before retrying.
pub const RETRY_UNAVAILABLE_SECS: u64 = 2;

/// An error a client sees: an HTTP status, a stable snake_case code and a human sentence.
/// Internal causes are logged where they happen and never put in `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds) with 429s (503s send `RETRY_UNAVAILABLE_SECS` unless set).
    pub retry_after: Option<u64>,
    /// With a 422: the setting that is not acceptable.
    pub field: Option<String>,
    /// With a 429 or `server_busy`: the limit that refused (never shown, counted).
    pub limit: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            field: None,
            limit: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn gone(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, code, message)
    }

    /// Over the limit named `limit` (a setting's name, counted in `/metrics`).
    pub fn rate_limited(limit: &'static str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            limit: Some(limit),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests; slow down and retry later.",
            )
        }
    }

    pub fn session_not_found() -> Self {
        Self::not_found("session_not_found", "No login session has this id.")
    }

    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The session store is unavailable; try again shortly.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side.",
        )
    }

    /// The JSON body alone, for places that build their own response.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code, "message": self.message })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        // Every 503 says when to come back; a 429 says when its window reopens.
        let retry_after = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_UNAVAILABLE_SECS));
        if let Some(seconds) = retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        if let Some(limit) = self.limit {
            response.extensions_mut().insert(LimitHit(limit));
        }
        response.json(ErrorBody {
            error: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        })
    }
}

/// Maps actix's own JSON extractor failures (bad syntax, wrong type, too large, wrong content
/// type) to our error body.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        ),
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "The request body is larger than this endpoint accepts.",
        ),
        E::Deserialize(e) => {
            ApiError::bad_request("invalid_json", format!("The JSON body is not valid: {e}"))
        }
        _ => ApiError::bad_request("invalid_body", "The request body could not be read."),
    }
}

pub fn query_error(err: actix_web::error::QueryPayloadError) -> ApiError {
    ApiError::bad_request("invalid_query", format!("The query string is not valid: {err}"))
}

pub fn path_error(_err: actix_web::error::PathError) -> ApiError {
    ApiError::not_found("not_found", "There is nothing at this path.")
}

/// The default service: unknown routes get the same JSON error body.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found("not_found", "There is nothing at this path.").error_response()
}

impl From<crate::session::TransitionError> for ApiError {
    fn from(e: crate::session::TransitionError) -> Self {
        use crate::session::TransitionError as T;
        match e {
            T::Expired => ApiError::gone(
                "session_expired",
                "This login session has expired; start a new one.",
            ),
            T::Cancelled => ApiError::gone("session_cancelled", "This login session was cancelled."),
            T::Denied => ApiError::gone(
                "session_denied",
                "This login was refused by the website's account service.",
            ),
            T::AlreadyConfirmed => {
                ApiError::conflict("already_confirmed", "This login session is already confirmed.")
            }
            T::AlreadyRedeemed => ApiError::conflict(
                "already_redeemed",
                "This login is complete and its ticket was already used.",
            ),
            T::Taken => ApiError::conflict("session_taken", "Another WeChat user already scanned this code."),
            T::NotScanned => ApiError::conflict(
                "not_scanned",
                "This code has not been scanned yet; scan it first.",
            ),
            T::BadScanToken => ApiError::forbidden(
                "invalid_scan_token",
                "The scan token does not belong to this session's scanner.",
            ),
            T::BadTicket => ApiError::bad_request("invalid_ticket", "This ticket is not valid."),
            T::TicketExpired => ApiError::gone("ticket_expired", "This ticket has expired; log in again."),
        }
    }
}

impl From<crate::connections::RegistryError> for ApiError {
    fn from(e: crate::connections::RegistryError) -> Self {
        use crate::connections::RegistryError as R;
        match e {
            R::Invalid(field) => ApiError {
                field: Some(field.field),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", field.message)
            },
            R::NotFound => ApiError::not_found(
                "connection_not_found",
                "No connection (or credential) has this identifier.",
            ),
            R::Exists => ApiError::conflict("connection_exists", "A connection with this identifier exists."),
            R::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_busy",
                "Another change to the connections is being made; try again.",
            ),
            R::Store(e) => e.into(),
        }
    }
}

impl From<crate::signing::KeyError> for ApiError {
    fn from(e: crate::signing::KeyError) -> Self {
        tracing::error!(error = %e, "signing keys unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signing_unavailable",
            "The ID-token signing keys cannot be used right now; try again shortly.",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store call failed");
        ApiError::store_unavailable()
    }
}

impl From<crate::store::UpdateError> for ApiError {
    fn from(e: crate::store::UpdateError) -> Self {
        use crate::store::UpdateError as U;
        match e {
            U::NotFound => ApiError::session_not_found(),
            U::Refused(t) => t.into(),
            U::Store(s) => s.into(),
        }
    }
}
