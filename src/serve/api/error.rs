//! The API's error responses: the CLI's `--json` error document
//! (`{"ok": false, "error": {...}}`) with the HTTP status that fits it.

use crate::core::error::{BridgeError, ErrorClass};
use crate::nas::store::{is_conflict, is_not_found};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, as the CLI would report it (boxed: errors travel in `Result`s).
    pub error: Box<BridgeError>,
}

impl ApiError {
    /// An error of the client's request (`contract`), with `status`.
    pub fn request(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: Box::new(BridgeError::new(ErrorClass::Contract, message)),
        }
    }

    /// 404 for something the API does not have.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::request(StatusCode::NOT_FOUND, what)
    }

    /// 400 for a query parameter that cannot be read, naming it as `key`.
    pub fn bad_parameter(key: &str, message: impl Into<String>) -> ApiError {
        let err = ApiError::request(StatusCode::BAD_REQUEST, message);
        ApiError {
            error: Box::new(err.error.with_detail("key", key)),
            ..err
        }
    }
}

/// The status of a bridge or store error: the client's mistakes (`contract`: a bad
/// spec, an unknown run, a state that refuses the request) are 4xx; the server's own
/// failures are 500, and an overloaded bridge 503.
impl From<BridgeError> for ApiError {
    fn from(error: BridgeError) -> ApiError {
        let status = if is_not_found(&error) {
            StatusCode::NOT_FOUND
        } else if is_conflict(&error) {
            StatusCode::CONFLICT
        } else {
            match error.class {
                ErrorClass::Contract => StatusCode::BAD_REQUEST,
                ErrorClass::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            }
        };
        ApiError {
            status,
            error: Box::new(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "API error: {}", self.error);
        }
        let body = json!({"ok": false, "error": self.error.to_json()});
        (self.status, Json(body)).into_response()
    }
}

/// The most of a plain-text error body kept as the JSON error's message.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Turns every error response that is not JSON yet (an extractor's rejection such as a
/// path that is not UTF-8 or a repeated query parameter, a timeout) into the API's JSON
/// error document, keeping its status and its text as the message.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), MAX_MESSAGE_BYTES)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    // The server's own non-JSON errors: the request deadline's 503, and anything else.
    let class = match status {
        StatusCode::SERVICE_UNAVAILABLE => ErrorClass::Timeout,
        status if status.is_server_error() => ErrorClass::SystemError,
        _ => ErrorClass::Contract,
    };
    let message = match class {
        ErrorClass::Timeout => format!(
            "the request was not answered within {} s (its body arrived too slowly, or \
             the server is busy)",
            super::REQUEST_TIMEOUT.as_secs()
        ),
        _ => message,
    };
    ApiError {
        status,
        error: Box::new(BridgeError::new(class, message)),
    }
    .into_response()
}

/// Refuses at once (413) a request whose `Content-Length` is over `limit`, before any of
/// its body is read: the body limit alone reads up to the limit first, and a client
/// announcing a huge body and sending little held a connection until the deadline.
pub fn oversized(request: &Request, limit: usize) -> Option<Response> {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (length > limit as u64).then(|| {
        ApiError::request(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {length} bytes, over serve.max_body_bytes ({limit})"),
        )
        .into_response()
    })
}
