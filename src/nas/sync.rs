//! MLflow sync (DESIGN §5): drains the store's MLflow outbox into an MLflow tracking
//! server or database. MLflow is a *view* of the store, never a point of failure: items
//! are enqueued in the transactions that record trials and end runs, and synced here, off
//! the trial path, by calling the `sync_mlflow` op of `cerebros_service` through a bridge
//! client of its own (one worker, so a sync never takes a trial's worker).
//!
//! * [`MlflowSync::flush`] syncs the pending items once, oldest first; an outage (the
//!   server is down, MLflow is missing) stops the pass at its first failure and leaves the
//!   rest pending. `cerebros-bridge mlflow sync` is one forced flush.
//! * [`SyncWorker`] runs flushes in the background while a run goes on: woken after each
//!   trial, retrying with backoff while MLflow is unreachable, and flushing once more when
//!   the run ends, for at most `mlflow.flush_timeout_ms` in all. It logs one warning when
//!   syncing starts failing and one when it recovers, never one per trial.
//!
//! **Transient or permanent** (`is_permanent`): an item that can never sync as it is
//! gets parked as `failed` with its reason and is not tried again (until it is recorded
//! again, or `mlflow sync --retry-failed`). That is only when its own content is refused:
//! its payload fails the bridge's payload check (over `invoke.max_payload_bytes`, nested
//! too deep), or MLflow refuses the request itself (`sync_mlflow` marks the error
//! `permanent`: MLflow's `INVALID_PARAMETER_VALUE`, `BAD_REQUEST`, `MALFORMED_REQUEST`).
//! Everything else may pass later and leaves the item pending: an outage, a timeout, a
//! crashed worker, a denied permission, an unknown exception (retried with backoff).
//!
//! Short timeouts keep a dead server from hanging anything: MLflow's own HTTP client gets
//! one try and a few seconds per request ([`HTTP_TIMEOUT_S`]; environment variables the
//! user set win), and each bridge call has its own deadline ([`CALL_TIMEOUT`]).
//!
//! The settings (what to sync to, the sync client's configuration) are in `settings`, the
//! background worker in `worker`; this file is the flush itself.

mod settings;
mod worker;

pub use settings::{enabled, resolve_tracking_uri, SyncSettings};
pub use worker::SyncWorker;

use crate::client::{CallOptions, Client};
use crate::core::error::{BridgeError, ErrorClass, Result};
use crate::core::payload;
use crate::nas::artifacts::{artifact_dir, run_folder};
use crate::nas::store::{now_ms, LeaseHolder, OutboxItem, OutboxKind, Store};
use serde::Serialize;
use serde_json::{json, Value};
use settings::http_settings;
use std::sync::Arc;
use std::time::Duration;

/// The op that syncs one item.
pub const SYNC_OP: &str = "sync_mlflow";
/// The module that provides [`SYNC_OP`]: the bridge's own service, whatever module the
/// runs themselves use.
pub const SYNC_MODULE: &str = "cerebros_service";
/// Deadline of one `sync_mlflow` call (the first one imports MLflow and may create its
/// database, which takes seconds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// MLflow's HTTP request timeout for the sync calls (`MLFLOW_HTTP_REQUEST_TIMEOUT`).
pub const HTTP_TIMEOUT_S: u64 = 5;
/// How long a flush holds the runs it leased before another syncer may take them.
const LEASE: Duration = Duration::from_secs(120);
/// Items leased per pass.
const BATCH: usize = 1000;
/// Retry delay of an item that failed on its own (a bad item, not an outage): doubles
/// per attempt from this, up to [`ITEM_RETRY_MAX`].
const ITEM_RETRY_START: Duration = Duration::from_secs(2);
const ITEM_RETRY_MAX: Duration = Duration::from_secs(300);
/// Grace given to the sync client's worker when it stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What one flush did (`mlflow sync --json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlushReport {
    /// Items synced by this flush.
    pub synced: u64,
    /// Items still pending afterwards (those that failed and may pass later included;
    /// parked ones not).
    pub pending: u64,
    /// Items this flush tried and could not sync (those it parked included).
    pub failed: u64,
    /// One entry per failure: `{"item", "kind", "run_id", "trial_id", "class", "message",
    /// "parked"}` (`parked`: it can never sync as it is and is now `failed`).
    pub errors: Vec<Value>,
    /// The failure that stopped the flush, when MLflow could not be reached.
    #[serde(skip)]
    pub outage: Option<BridgeError>,
}

/// A syncer: the store, a client for `sync_mlflow` and the identity its leases carry.
pub struct MlflowSync {
    store: Arc<Store>,
    client: Client,
    tracking_uri: String,
    holder: LeaseHolder,
    max_payload_bytes: usize,
}

impl MlflowSync {
    /// Starts the sync client (one worker process running [`SYNC_MODULE`]); its leases
    /// are `holder`'s.
    pub fn start(
        settings: &SyncSettings,
        store: Arc<Store>,
        holder: LeaseHolder,
    ) -> Result<MlflowSync> {
        let client = Client::start(&settings.client_config)?;
        Ok(MlflowSync {
            store,
            client,
            tracking_uri: settings.tracking_uri.clone(),
            holder,
            max_payload_bytes: settings.client_config.invoke.max_payload_bytes,
        })
    }

    /// The tracking URI.
    pub fn tracking_uri(&self) -> &str {
        &self.tracking_uri
    }

    /// Syncs the pending items once, oldest first (with `due_only`, only those whose
    /// retry time has come). Stops at the first outage-like failure; other failures are
    /// recorded on their item (parking those that can never sync) and the pass goes on.
    pub async fn flush(&self, due_only: bool) -> Result<FlushReport> {
        let items = self
            .store
            .outbox_lease(&self.holder, now_ms(), LEASE, due_only, BATCH)?;
        let mut report = FlushReport::default();
        let outcome = self.sync_items(&items, &mut report).await;
        let released = self.store.outbox_release(&self.holder.id);
        outcome?;
        released?;
        report.pending = self.store.outbox_counts()?.pending;
        Ok(report)
    }

    async fn sync_items(&self, items: &[OutboxItem], report: &mut FlushReport) -> Result<()> {
        for item in items {
            self.store
                .outbox_renew(&self.holder.id, now_ms() + LEASE.as_millis() as i64)?;
            let outcome = match self.payload(item) {
                Ok(Some(payload)) => self.call(payload).await,
                Ok(None) => Ok((None, None)),
                Err(err) => Err(err),
            };
            match outcome {
                Ok((run_id, trial_id)) => {
                    if self
                        .store
                        .outbox_synced(item, run_id.as_deref(), trial_id.as_deref())?
                    {
                        report.synced += 1;
                    }
                }
                Err(err) if is_permanent(&err) => {
                    let parked = self.store.outbox_park(item, &err.message)?;
                    report.note_failure(item, &err, parked);
                    if parked {
                        tracing::warn!(
                            target: "mlflow.sync",
                            item = item.id,
                            run_id = %item.run_id,
                            trial_id = item.trial_id.as_deref().unwrap_or(""),
                            "this item can never sync to MLflow as it is; parked as failed \
                             (listed by `cerebros-bridge mlflow sync`): {}",
                            err.message
                        );
                    }
                }
                Err(err) => {
                    report.note_failure(item, &err, false);
                    let retry = item_retry_delay(item.attempts + 1);
                    self.store.outbox_failed(
                        item,
                        &err.message,
                        now_ms() + retry.as_millis() as i64,
                    )?;
                    if is_outage(&err) {
                        report.outage = Some(err);
                        return Ok(());
                    }
                    if item.attempts == 0 {
                        tracing::warn!(
                            target: "mlflow.sync",
                            item = item.id,
                            run_id = %item.run_id,
                            trial_id = item.trial_id.as_deref().unwrap_or(""),
                            "MLflow sync of this item failed (retried later): {}",
                            err.message
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The `sync_mlflow` payload of `item`, from what the store holds now; `None` for a
    /// trial the store no longer has (nothing to sync). A payload the bridge would refuse
    /// (over `invoke.max_payload_bytes`, nested too deep) is a permanent error: the same
    /// item always builds the same payload.
    fn payload(&self, item: &OutboxItem) -> Result<Option<Value>> {
        let run = self.store.run(&item.run_id)?;
        let final_run = item.kind == OutboxKind::Run && run.status.is_final();
        let trial = match (&item.kind, &item.trial_id) {
            (OutboxKind::Trial, Some(trial_id)) => {
                match self.store.trial(&item.run_id, trial_id)? {
                    Some(trial) => Some(serde_json::to_value(trial).unwrap_or_default()),
                    None => return Ok(None),
                }
            }
            _ => None,
        };
        // The only folder the service may upload a trial's artifact from (DESIGN §10).
        let artifact_root = run_folder(&artifact_dir(self.store.path()), &item.run_id);
        let payload = json!({
            "tracking_uri": self.tracking_uri,
            "run": run,
            "final": final_run,
            "trial": trial,
            "artifact_root": artifact_root,
            "http": http_settings(),
        });
        payload::check_value(&payload, self.max_payload_bytes).map_err(|err| {
            let mut err = err.with_op(SYNC_OP).with_detail(PERMANENT, true);
            err.message = format!("its sync_mlflow payload cannot be sent: {}", err.message);
            err
        })?;
        Ok(Some(payload))
    }

    /// Calls `sync_mlflow`; returns the parent's and the child's MLflow ids.
    async fn call(&self, payload: Value) -> Result<(Option<String>, Option<String>)> {
        let options = CallOptions {
            timeout: Some(CALL_TIMEOUT),
            max_retries: Some(0),
            ..CallOptions::default()
        };
        let reply = self.client.call_with(SYNC_OP, payload, options).await?;
        let id = |part: &str| {
            reply
                .get(part)
                .and_then(|p| p.get("mlflow_run_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok((id("run"), id("trial")))
    }

    /// Stops the sync client (blocks for at most its grace).
    pub fn shutdown(&self) {
        self.client.shutdown(SHUTDOWN_GRACE);
    }
}

/// The detail that marks an error as permanent (set by [`MlflowSync`]'s payload check and
/// by `sync_mlflow` for a request MLflow refuses).
const PERMANENT: &str = "permanent";

/// Whether `err` means the item can never sync as it is (it is parked as `failed`); see
/// the module's doc for the rule.
fn is_permanent(err: &BridgeError) -> bool {
    err.details.get(PERMANENT) == Some(&Value::Bool(true))
}

/// Whether `err` means MLflow (or the bridge) cannot sync anything right now, rather
/// than that this one item is bad.
fn is_outage(err: &BridgeError) -> bool {
    !matches!(
        err.class,
        ErrorClass::Exception | ErrorClass::Contract | ErrorClass::ParseError
    )
}

impl FlushReport {
    fn note_failure(&mut self, item: &OutboxItem, err: &BridgeError, parked: bool) {
        self.failed += 1;
        self.errors.push(json!({
            "item": item.id,
            "kind": item.kind,
            "run_id": item.run_id,
            "trial_id": item.trial_id,
            "class": err.class.as_str(),
            "message": err.message,
            "parked": parked,
        }));
    }
}

fn item_retry_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (ITEM_RETRY_START * factor).min(ITEM_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_stop_a_flush_and_bad_items_do_not() {
        let err = |class| BridgeError::new(class, "x");
        assert!(is_outage(&err(ErrorClass::SystemError)));
        assert!(is_outage(&err(ErrorClass::Timeout)));
        assert!(is_outage(&err(ErrorClass::Dependency)));
        assert!(!is_outage(&err(ErrorClass::Exception)));
        // Only an error marked permanent parks its item.
        assert!(!is_permanent(&err(ErrorClass::Exception)));
        assert!(!is_permanent(&err(ErrorClass::Contract)));
        assert!(is_permanent(
            &err(ErrorClass::Exception).with_detail(PERMANENT, true)
        ));
        assert_eq!(item_retry_delay(1), Duration::from_secs(2));
        assert_eq!(item_retry_delay(3), Duration::from_secs(8));
        assert_eq!(item_retry_delay(30), ITEM_RETRY_MAX);
    }
}
