//! The run store (DESIGN §5): one SQLite file (WAL) holding runs, trials, artifacts and
//! run events. Every trial is written the moment it returns, in one transaction with
//! its artifact, its event and the run's counters, so a killed process loses nothing it
//! had reported.
//!
//! [`Store`]'s methods live beside what they handle: `open` (the file and its schema
//! migrations), `runs`, `trials` (with their artifacts), `events`, `queue` (the run
//! queue of `serve`), `outbox` (the MLflow outbox), `counts` (runs and trials by
//! state); `state` names the run and trial states, `owner` who drives a run, and
//! `calls` runs store calls off an async runtime.

mod calls;
mod counts;
mod events;
mod open;
mod outbox;
mod owner;
mod queue;
mod runs;
mod schema;
mod state;
#[cfg(test)]
pub(crate) mod test_support;
mod trials;

pub use calls::StoreCalls;
pub use counts::StoreCounts;
pub use events::EventRecord;
pub use outbox::{FailedItem, LeaseHolder, OutboxCounts, OutboxItem, OutboxKind};
pub use owner::{now_ms, Owner, HEARTBEAT_EVERY, LEASE};
pub use queue::{is_conflict, run_document, RunsPage, SERVE_DRIVER};
pub use runs::{is_not_found, RunRecord};
pub use state::{CancelOutcome, RunEnd, RunState, TrialState, UnknownState};
pub use trials::{ArtifactRecord, Placement, TrialRecord};

use crate::core::error::{BridgeError, ErrorClass, Result};
use events::insert_event;
use parking_lot::Mutex;
use rusqlite::{Connection, Transaction};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one immediate (write-locked) transaction and commits it.
    fn write<T>(
        &self,
        context: &str,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_error(context))?;
        let value = f(&tx).map_err(db_error(context))?;
        tx.commit().map_err(db_error(context))?;
        Ok(value)
    }
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A SQLite error as a `system_error` saying what the store was doing (`context`).
fn db_error(context: &str) -> impl Fn(rusqlite::Error) -> BridgeError + '_ {
    move |e| {
        let full = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
        );
        let hint = if full { " (the disk is full)" } else { "" };
        BridgeError::new(
            ErrorClass::SystemError,
            format!("store: {context}: {e}{hint}"),
        )
    }
}

/// A JSON column's value; text that is not JSON (a row written by hand) as a string.
fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
