//! Run events (`ml.run.queued`, `ml.run.start`, `ml.run.trial`, `ml.run.stop`,
//! `ml.run.exception`): one row each, written in the transaction of the change they
//! record.

use super::{db_error, json_column, now_rfc3339, Store};
use crate::core::error::Result;
use rusqlite::{params, Transaction};
use serde::Serialize;
use serde_json::Value;

/// One run event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    /// `ml.run.start`, `ml.run.trial`, `ml.run.stop`, `ml.run.exception`, …
    pub kind: String,
    /// When (RFC 3339).
    pub at: String,
    /// Event data.
    pub data: Value,
}

impl Store {
    /// The events of a run, oldest first.
    pub fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT kind, at, data FROM run_events WHERE run_id = ?1 ORDER BY id")
            .map_err(db_error("read events"))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(EventRecord {
                    kind: r.get(0)?,
                    at: r.get(1)?,
                    data: json_column(r.get::<_, String>(2)?),
                })
            })
            .map_err(db_error("read events"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error("read events"))
    }
}

/// Records event `kind` of `run_id`, now, in `tx`.
pub(super) fn insert_event(
    tx: &Transaction<'_>,
    run_id: &str,
    kind: &str,
    data: &Value,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO run_events (run_id, kind, at, data) VALUES (?1, ?2, ?3, ?4)",
        params![run_id, kind, now_rfc3339(), data.to_string()],
    )?;
    Ok(())
}
