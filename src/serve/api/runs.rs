//! The runs: list, show, submit, cancel, resume, and one trial with its curves. Bodies
//! are the CLI's `--json` documents (DESIGN §7).

use super::error::ApiError;
use crate::nas::spec::{RunSpec, SpecSyntax};
use crate::nas::store::{run_document, CancelOutcome, RunState};
use crate::serve::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// Runs per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// The longest id the API accepts.
const MAX_ID_CHARS: usize = 128;

/// `GET /api/runs`'s query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/runs?status=&limit=&cursor=`: `{"runs": [...], "next_cursor": ...}`,
/// newest first.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(text.parse::<RunState>().map_err(|_| {
            let known: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_parameter(
                "status",
                format!("status {text:?} is not one of {}", known.join(", ")),
            )
        })?),
        None => None,
    };
    let limit = match query.limit.as_deref() {
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    "limit",
                    format!("limit {text:?}: expected a whole number from 1 to {MAX_LIMIT}"),
                )
            })?,
        None => DEFAULT_LIMIT,
    };
    let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(text.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
            ApiError::bad_parameter(
                "cursor",
                format!("cursor {text:?}: expected the next_cursor of a previous page"),
            )
        })?),
        None => None,
    };
    let page = state
        .store(move |store| store.runs_page(status, limit, cursor))
        .await?;
    Ok(Json(json!({
        "runs": page.runs,
        "next_cursor": page.next_cursor.map(|c| c.to_string()),
    })))
}

/// `GET /api/runs/{id}`: as `runs show --json`.
pub async fn show(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run_id = checked_id(&run_id)?.to_owned();
    // The records only: the document (a copy of every trial) is built here, so that the
    // store thread is free for the next call sooner.
    let (run, trials) = state
        .store(move |store| Ok((store.run(&run_id)?, store.trials(&run_id)?)))
        .await?;
    Ok(Json(run_document(&run, &trials)))
}

/// `GET /api/runs/{id}/trials/{trial_id}`: `{"trial": {...}, "curves": {...}}`, the
/// curves being the trial's per-epoch series (`metrics.curve`).
pub async fn trial(
    State(state): State<AppState>,
    Path((run_id, trial_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let run_id = checked_id(&run_id)?.to_owned();
    let trial_id = checked_id(&trial_id)?.to_owned();
    let (id, tid) = (run_id.clone(), trial_id.clone());
    let trial = state
        .store(move |store| {
            store.run(&id)?;
            store.trial(&id, &tid)
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id} has no trial {trial_id:?}")))?;
    let curves = trial
        .metrics
        .get("curve")
        .filter(|c| c.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({"trial": trial, "curves": curves})))
}

/// `POST /api/runs`: a spec as TOML (`application/toml`) or JSON (`application/json`),
/// checked exactly as `run` checks a file, stored `queued`: 202
/// `{"run_id": ..., "status": "queued"}`.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body =
        body.map_err(|rejection| ApiError::request(rejection.status(), rejection.body_text()))?;
    let syntax = spec_syntax(&headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::request(
            StatusCode::BAD_REQUEST,
            "invalid run spec: the body is not UTF-8",
        )
    })?;
    let spec = RunSpec::from_client(text, syntax, &state.data_root)?;
    let run_id = state.store(move |store| store.submit(&spec)).await?;
    state.queue_bell.notify_one();
    state.hub.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": run_id, "status": RunState::Queued})),
    ))
}

/// `POST /api/runs/{id}/cancel`: `{"run_id", "status"}`, the status being
/// `cancelling` (a run this server drives stops at once, one another process drives at
/// its next heartbeat; it ends `cancelled`) or the state it ended in.
pub async fn cancel(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run_id = checked_id(&run_id)?.to_owned();
    let id = run_id.clone();
    let outcome = state.store(move |store| store.request_cancel(&id)).await?;
    if outcome == CancelOutcome::Cancelling {
        state.drives.cancel(&run_id);
    }
    state.hub.wake();
    Ok(Json(json!({"run_id": run_id, "status": outcome.as_str()})))
}

/// `POST /api/runs/{id}/resume`: queues an interrupted run again (202
/// `{"run_id", "status": "queued"}`); 409 for a run that ended or is being driven.
pub async fn resume(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let run_id = checked_id(&run_id)?.to_owned();
    let id = run_id.clone();
    let run = state.store(move |store| store.requeue(&id)).await?;
    state.queue_bell.notify_one();
    state.hub.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": run_id, "status": run.status})),
    ))
}

/// An id from a URL path: ids are made of letters, digits, `.`, `_` and `-` (what
/// the store issues); anything else (`../`, control characters, a huge string)
/// names nothing, and is answered 404 without a query.
pub fn checked_id(id: &str) -> Result<&str, ApiError> {
    let plain = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Ok(id)
    } else {
        Err(ApiError::not_found("no such run or trial"))
    }
}

/// How the body of `POST /api/runs` is written, from its `Content-Type`; anything but
/// TOML or JSON is 415.
fn spec_syntax(headers: &HeaderMap) -> Result<SpecSyntax, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/toml" => Ok(SpecSyntax::Toml),
        "application/json" => Ok(SpecSyntax::Json),
        _ => Err(ApiError::request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a run spec is sent as application/toml or application/json, not {content_type:?}"
            ),
        )),
    }
}

/// A query string that does not read as the route's parameters (a repeated one, …): 400
/// naming the parameter when the message does (serde quotes it in backticks).
fn query_error(rejection: QueryRejection) -> ApiError {
    let message = rejection.body_text();
    let key = message
        .split('`')
        .nth(1)
        .filter(|k| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    match key {
        Some(key) => ApiError::bad_parameter(key, message.clone()),
        None => ApiError::request(StatusCode::BAD_REQUEST, message),
    }
}
