//! `GET /api/runs/{id}/events` and `GET /api/events`: run events as Server-Sent Events.
//!
//! Each event goes out with the store's event id as its SSE `id`, its kind as the SSE
//! `event` and the stored event as JSON `data`. A client that reconnects with
//! `Last-Event-ID: N` gets every event after N, then live ones: no gap, no duplicate.
//! Without it, a run's stream starts from the run's first event and the stream of all
//! runs from now.
//!
//! A stream subscribes to the [`EventHub`](crate::serve::hub::EventHub) *before* it
//! reads what the store already holds, and skips any event whose id it has passed, so
//! an event written in between is neither lost nor sent twice. A stream that falls
//! behind the hub's buffer reads the store again from its last id.

use super::error::ApiError;
use super::runs::checked_id;
use crate::nas::store::EventRecord;
use crate::serve::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often an idle stream sends a comment, so that a client that went away is
/// noticed (and its stream dropped) within this time.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Stored events read per query while catching up.
const PAGE: u32 = 500;

/// The events of one run.
pub async fn run_events(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run_id = checked_id(&run_id)?.to_owned();
    let after = last_event_id(&headers)?.unwrap_or(0);
    let id = run_id.clone();
    state.store(move |store| store.run(&id)).await?;
    Ok(stream_events(state, Some(run_id), after).await)
}

/// The events of every run.
pub async fn all_events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match last_event_id(&headers)? {
        Some(after) => after,
        None => state.store(|store| store.last_event_id()).await?,
    };
    Ok(stream_events(state, None, after).await)
}

/// The `Last-Event-ID` header: a non-negative integer, if present.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_parameter(
                "Last-Event-ID",
                "Last-Event-ID must be the id of an event (a non-negative integer)",
            )
        })
}

async fn stream_events(
    state: AppState,
    run_id: Option<String>,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = state.hub.subscribe();
    let follower = Follower {
        state: state.clone(),
        run_id,
        last: after,
        backlog: VecDeque::new(),
        catching_up: true,
        live,
        _client: ClientCount::new(state.sse_clients.clone()),
    };
    let events = stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(to_sse(&event)), follower))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn to_sse(event: &EventRecord) -> Event {
    let data = serde_json::to_string(event).unwrap_or_default();
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(data)
}

/// One client's position in the events.
struct Follower {
    state: AppState,
    run_id: Option<String>,
    /// The id of the last event sent.
    last: i64,
    /// Stored events read but not sent yet.
    backlog: VecDeque<EventRecord>,
    /// Whether the store may hold events after `last` that the hub will not send.
    catching_up: bool,
    live: broadcast::Receiver<Arc<EventRecord>>,
    _client: ClientCount,
}

impl Follower {
    /// The next event to send; `None` ends the stream (the server is stopping).
    async fn next(&mut self) -> Option<EventRecord> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.last = event.id;
                return Some(event);
            }
            if self.catching_up {
                self.read_store().await?;
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    let wanted = self.run_id.as_ref().is_none_or(|id| *id == event.run_id);
                    if event.id > self.last && wanted {
                        self.last = event.id;
                        return Some(EventRecord::clone(&event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Reads the next page of stored events after `last`; catching up ends with a
    /// page that is not full.
    async fn read_store(&mut self) -> Option<()> {
        let (run_id, after) = (self.run_id.clone(), self.last);
        let page = self
            .state
            .store(move |store| store.events_after(run_id.as_deref(), after, PAGE))
            .await;
        match page {
            Ok(page) => {
                self.catching_up = page.len() == PAGE as usize;
                self.backlog.extend(page);
                Some(())
            }
            Err(err) => {
                tracing::warn!("event stream: cannot read events: {err}");
                None
            }
        }
    }
}

/// Counts a connected stream while it lives.
struct ClientCount(Arc<AtomicUsize>);

impl ClientCount {
    fn new(count: Arc<AtomicUsize>) -> ClientCount {
        count.fetch_add(1, Ordering::Relaxed);
        ClientCount(count)
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
