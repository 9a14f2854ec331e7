//! Run events (`ml.run.queued`, `ml.run.start`, `ml.run.trial`, `ml.run.best`,
//! `ml.run.stop`, `ml.run.exception`): one row each, written in the transaction of the
//! change they record. Their ids increase with every event of every run, so a reader
//! that remembers the last id it saw (an SSE client's `Last-Event-ID`) reads exactly
//! what it missed with [`Store::events_after`].

use super::{db_error, json_column, now_rfc3339, Store};
use crate::core::error::Result;
use rusqlite::{params, Transaction};
use serde::Serialize;
use serde_json::Value;

/// One run event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    /// The event's id: increasing across all runs (SQLite rowid).
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// `ml.run.start`, `ml.run.trial`, `ml.run.best`, `ml.run.stop`, `ml.run.exception`, …
    pub kind: String,
    /// When (RFC 3339).
    pub at: String,
    /// Event data.
    pub data: Value,
}

const EVENT_SELECT: &str = "SELECT id, run_id, kind, at, data FROM run_events";

impl Store {
    /// The events of a run, oldest first.
    pub fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        self.events_after(Some(run_id), 0, u32::MAX)
    }

    /// At most `limit` events with an id above `after`, oldest first: of run `run_id`,
    /// or of every run when it is `None`.
    pub fn events_after(
        &self,
        run_id: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let conn = self.conn.lock();
        let read = |r: &rusqlite::Row<'_>| {
            Ok(EventRecord {
                id: r.get(0)?,
                run_id: r.get(1)?,
                kind: r.get(2)?,
                at: r.get(3)?,
                data: json_column(r.get::<_, String>(4)?),
            })
        };
        let rows = match run_id {
            Some(run_id) => conn
                .prepare_cached(&format!(
                    "{EVENT_SELECT} WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![run_id, after, limit], read)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
            None => conn
                .prepare_cached(&format!(
                    "{EVENT_SELECT} WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![after, limit], read)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
        };
        rows.map_err(db_error("read events"))
    }

    /// The id of the newest event of any run (0 when there is none).
    pub fn last_event_id(&self) -> Result<i64> {
        let conn = self.conn.lock();
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM run_events", [], |r| {
            r.get(0)
        })
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
    tx.prepare_cached("INSERT INTO run_events (run_id, kind, at, data) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![run_id, kind, now_rfc3339(), data.to_string()])?;
    Ok(())
}
