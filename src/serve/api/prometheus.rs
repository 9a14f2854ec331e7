//! `GET /metrics` (Prometheus text format), and the count of every request answered.

use super::error::ApiError;
use crate::serve::metrics::{record_http_request, Snapshot, CONTENT_TYPE};
use crate::serve::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// `GET /metrics`: the bridge, the runs and trials in the store, the MLflow outbox
/// and the server (see [`crate::serve::metrics`]).
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (store, outbox) = state
        .store(|store| Ok((store.counts()?, store.outbox_counts()?)))
        .await?;
    let snapshot = Snapshot {
        client: state.client.stats(),
        store,
        outbox,
        sse_clients: state.sse_clients.load(Ordering::Relaxed),
    };
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(&snapshot),
    ))
}

/// Counts each request by its route *template* (`/api/runs/{id}`, never the path a
/// client sent: that would let clients create series) and status.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(request).await;
    record_http_request(&route, response.status().as_u16());
    response
}
