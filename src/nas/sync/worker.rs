//! The background sync of a run ([`SyncWorker`]): flushes when woken after a trial,
//! every few seconds, and with backoff while MLflow is unreachable, logging each outage
//! once; when the run ends, one last flush bounded by `mlflow.flush_timeout_ms`.

use super::{FlushReport, MlflowSync, SyncSettings};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::nas::store::{LeaseHolder, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

/// First and longest wait between attempts while MLflow is unreachable.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the background worker looks for due items when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Whether syncing is failing, to log each outage once.
struct Health {
    tracking_uri: String,
    failing: bool,
    backoff: Duration,
}

impl Health {
    fn note(&mut self, outcome: &Result<FlushReport>) {
        let outage = match outcome {
            Ok(report) => report.outage.as_ref().map(|e| (e, report.pending)),
            Err(err) => Some((err, 0)),
        };
        match outage {
            Some((err, pending)) => {
                if self.failing {
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                } else {
                    self.failing = true;
                    self.backoff = BACKOFF_START;
                    tracing::warn!(
                        target: "mlflow.sync",
                        tracking_uri = %self.tracking_uri,
                        pending,
                        "MLflow sync is failing ({}); runs go on and their items stay pending, \
                         retried in the background or flushed by `cerebros-bridge mlflow sync`",
                        err.message
                    );
                }
            }
            None if self.failing => {
                self.failing = false;
                self.backoff = BACKOFF_START;
                tracing::warn!(
                    target: "mlflow.sync",
                    tracking_uri = %self.tracking_uri,
                    "MLflow sync recovered; pending items are being synced"
                );
            }
            None => {}
        }
    }
}

/// The background sync of one run: a task that flushes the outbox when woken, every few
/// seconds, and with backoff while MLflow is unreachable, and once more when finished.
pub struct SyncWorker {
    /// Set by [`SyncWorker::finish`] to the time the task must be done by.
    stop: watch::Sender<Option<Instant>>,
    flush_timeout: Duration,
    handle: tokio::task::JoinHandle<()>,
}

impl SyncWorker {
    /// Spawns the worker on the current runtime; `wake` is notified after each recorded
    /// trial. The sync client starts inside the task, so a failure to start it (MLflow
    /// or the service package missing) is logged once and costs the run nothing.
    pub fn spawn(settings: SyncSettings, store: Arc<Store>, wake: Arc<Notify>) -> SyncWorker {
        let (stop, stopped) = watch::channel(None);
        let flush_timeout = settings.flush_timeout;
        // Its `sync_mlflow` calls belong to the run that started it.
        let handle = tokio::spawn(run_worker(settings, store, wake, stopped).in_current_span());
        SyncWorker {
            stop,
            flush_timeout,
            handle,
        }
    }

    /// Flushes once more (every pending item, due or not), then stops the worker and its
    /// client. The whole wait, a sync call already in flight included, lasts at most
    /// `mlflow.flush_timeout_ms` (plus the client's shutdown grace); what is not synced by
    /// then stays pending, for the next run or `mlflow sync`.
    pub async fn finish(self) {
        let _ = self.stop.send(Some(Instant::now() + self.flush_timeout));
        if let Err(err) = self.handle.await {
            tracing::warn!(target: "mlflow.sync", "the MLflow sync task failed: {err}");
        }
    }
}

/// The worker's task: starts the client, drains the outbox until told to finish, and
/// gives up when the finish deadline passes.
async fn run_worker(
    settings: SyncSettings,
    store: Arc<Store>,
    wake: Arc<Notify>,
    stopped: watch::Receiver<Option<Instant>>,
) {
    let mut health = Health {
        tracking_uri: settings.tracking_uri.clone(),
        failing: false,
        backoff: BACKOFF_START,
    };
    let flush_timeout = settings.flush_timeout;
    let starting = store.clone();
    let start = tokio::task::spawn_blocking(move || {
        MlflowSync::start(&settings, starting, LeaseHolder::current())
    });
    let started = tokio::select! {
        started = start => started,
        _ = deadline(stopped.clone()) => {
            // The client is dropped (and stopped) whenever its start returns.
            gave_up(&store, flush_timeout);
            return;
        }
    };
    let sync = match started {
        Ok(Ok(sync)) => sync,
        Ok(Err(err)) => {
            health.note(&Err(err));
            return;
        }
        Err(err) => {
            health.note(&Err(BridgeError::new(
                ErrorClass::SystemError,
                err.to_string(),
            )));
            return;
        }
    };
    tokio::select! {
        _ = drain(&sync, &mut health, &wake, stopped.clone()) => {}
        _ = deadline(stopped) => {
            // The dropped call was cancelled; give its run back at once.
            let _ = store.outbox_release(&sync.holder.id);
            gave_up(&store, flush_timeout);
        }
    }
    let _ = tokio::task::spawn_blocking(move || sync.shutdown()).await;
}

/// Flushes the due items when woken, every few seconds, or after a backoff while failing;
/// once finishing is asked for, flushes every pending item once more and returns.
async fn drain(
    sync: &MlflowSync,
    health: &mut Health,
    wake: &Notify,
    mut stopped: watch::Receiver<Option<Instant>>,
) {
    loop {
        let wait = if health.failing {
            health.backoff
        } else {
            IDLE_POLL
        };
        tokio::select! {
            _ = stopped.wait_for(Option::is_some) => break,
            _ = wake.notified(), if !health.failing => {}
            _ = tokio::time::sleep(wait) => {}
        }
        health.note(&sync.flush(true).await);
    }
    health.note(&sync.flush(false).await);
}

/// Resolves when the finish deadline has passed (at once if the [`SyncWorker`] was
/// dropped without finishing).
async fn deadline(mut stopped: watch::Receiver<Option<Instant>>) {
    let at = match stopped.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn gave_up(store: &Store, flush_timeout: Duration) {
    let pending = store.outbox_counts().map(|c| c.pending).unwrap_or(0);
    tracing::warn!(
        target: "mlflow.sync",
        pending,
        "MLflow sync did not finish within mlflow.flush_timeout_ms = {} of the run's end; \
         the rest stays pending for the next run or `cerebros-bridge mlflow sync`",
        flush_timeout.as_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_noted_once_and_its_end_once() {
        let mut health = Health {
            tracking_uri: "http://127.0.0.1:1".into(),
            failing: false,
            backoff: BACKOFF_START,
        };
        let down = || FlushReport {
            outage: Some(BridgeError::new(ErrorClass::SystemError, "refused")),
            ..FlushReport::default()
        };
        health.note(&Ok(down()));
        assert!(health.failing);
        assert_eq!(health.backoff, BACKOFF_START);
        for _ in 0..10 {
            health.note(&Ok(down()));
        }
        assert_eq!(health.backoff, BACKOFF_MAX);
        health.note(&Ok(FlushReport::default()));
        assert!(!health.failing);
        assert_eq!(health.backoff, BACKOFF_START);
    }
}
