//! The event hub: one task reads the run events the store gains (written by this
//! server's runs, or by any other process sharing the store) and broadcasts them, in
//! id order, to the event streams. It reads when this server's run worker reports an
//! event (at once) and every [`POLL_EVERY`] otherwise, so each stream does not query
//! the store itself unless it fell behind.

use crate::nas::run::RunEvent;
use crate::nas::store::{EventRecord, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// How often the hub looks for events written by other processes.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Events buffered per stream before a slow stream falls back to reading the store.
const CAPACITY: usize = 4096;
/// Events read per query.
const BATCH: u32 = 1000;

/// Broadcasts stored run events (see the module doc).
#[derive(Clone)]
pub struct EventHub {
    events: broadcast::Sender<Arc<EventRecord>>,
    wake: Arc<Notify>,
}

impl EventHub {
    /// Starts the hub over `store`, from the events stored after `after`, woken by
    /// `worker_events`.
    pub fn spawn(
        store: Arc<Store>,
        after: i64,
        worker_events: broadcast::Receiver<RunEvent>,
    ) -> EventHub {
        let (events, _) = broadcast::channel(CAPACITY);
        let hub = EventHub {
            events,
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(forward_wake_ups(worker_events, hub.wake.clone()));
        tokio::spawn(hub.clone().publish(store, after));
        hub
    }

    /// Stored events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.events.subscribe()
    }

    /// Asks the hub to read the store now (an event was just written).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn publish(self, store: Arc<Store>, mut last: i64) {
        loop {
            let reader = store.clone();
            let read = tokio::task::spawn_blocking(move || reader.events_after(None, last, BATCH));
            let batch = match read.await {
                Ok(Ok(batch)) => batch,
                Ok(Err(err)) => {
                    tracing::warn!("event hub: cannot read events: {err}");
                    Vec::new()
                }
                Err(_) => return,
            };
            let full = batch.len() == BATCH as usize;
            for event in batch {
                last = event.id;
                // No receiver is not an error: nobody is listening.
                let _ = self.events.send(Arc::new(event));
            }
            if !full {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        }
    }
}

/// Rings the hub whenever the run worker reports an event.
async fn forward_wake_ups(mut worker_events: broadcast::Receiver<RunEvent>, wake: Arc<Notify>) {
    loop {
        match worker_events.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
