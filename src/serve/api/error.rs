//! The API's error responses: the CLI's `--json` error document
//! (`{"ok": false, "error": {...}}`) with the HTTP status that fits it.

use crate::core::error::{BridgeError, ErrorClass};
use crate::nas::store::{is_conflict, is_not_found};
use axum::http::StatusCode;
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
