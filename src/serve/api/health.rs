//! `GET /api/health`: the bridge's workers, the store and the MLflow outbox backlog.
//! It never calls Python: a health check must answer while every worker trains.

use super::error::ApiError;
use crate::nas::store::RunState;
use crate::serve::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// `{"status": "ok" | "degraded", "bridge": {...}, "store": {...}, "mlflow_outbox":
/// {...}, "event_streams": N}` (N: connected event streams); 503 when degraded (no live bridge worker, or the store
/// cannot be read).
pub async fn health(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let stats = state.client.stats();
    let store = state
        .store(|store| {
            let outbox = store.outbox_counts()?;
            let queued = store.runs_page(Some(RunState::Queued), 1, None)?;
            Ok((
                store.path().display().to_string(),
                outbox,
                !queued.runs.is_empty(),
            ))
        })
        .await;
    let bridge_ok = stats.workers.workers_alive > 0;
    let (store_doc, outbox, store_ok) = match store {
        Ok((path, outbox, queue_waiting)) => (
            json!({"ok": true, "path": path, "queue_waiting": queue_waiting}),
            json!(outbox),
            true,
        ),
        Err(err) => (
            json!({"ok": false, "error": err.to_json()}),
            Value::Null,
            false,
        ),
    };
    let ok = bridge_ok && store_ok;
    let document = json!({
        "status": if ok { "ok" } else { "degraded" },
        "bridge": {
            "ok": bridge_ok,
            "mode": stats.mode,
            "workers": stats.workers,
            "calls": stats.calls,
            "errors": stats.errors,
        },
        "store": store_doc,
        "mlflow_outbox": outbox,
        "event_streams": state.sse_clients.load(Ordering::Relaxed),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(document)))
}
