//! The routes (DESIGN §11) and what every response shares: JSON errors (for unknown
//! routes (404) and methods (405), body limits (413) and every rejection), a deadline on
//! handlers that answer at once, and gzip for large bodies.

pub mod error;
mod events;
mod health;
mod prometheus;
mod runs;

use crate::serve::state::AppState;
use crate::serve::{guard, page};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;

/// How long a request that does not stream may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole application: page, API, event streams.
pub fn router(state: AppState) -> Router {
    let answers = Router::new()
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .route("/api/health", get(health::health))
        .route("/metrics", get(prometheus::metrics))
        .route("/api/runs", get(runs::list).post(runs::submit))
        .route("/api/runs/{id}", get(runs::show))
        .route("/api/runs/{id}/cancel", post(runs::cancel))
        .route("/api/runs/{id}/resume", post(runs::resume))
        .route("/api/runs/{id}/trials/{trial_id}", get(runs::trial))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
    let streams = Router::new()
        .route("/api/events", get(events::all_events))
        .route("/api/runs/{id}/events", get(events::run_events));
    answers
        .merge(streams)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::request(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.serve.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .route_layer(axum::middleware::from_fn(prometheus::count_requests))
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// 413 at once for an announced body over `serve.max_body_bytes` ([`error::oversized`]).
async fn refuse_oversized(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match error::oversized(&request, state.serve.max_body_bytes) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}
