//! The states of runs and trials as the store holds them, and as `runs … --json` prints
//! them. Each state's name is written once, in its `as_str`; the text in SQLite, the
//! JSON documents and the CLI's tables all come from it.
//!
//! These are not the contract enums ([`RunStatus`], [`TrialStatus`]), which say how a run
//! or trial *ended* in a message to or from the service. The store also records states
//! in between (`queued`, `running`) and one it infers (`interrupted`: `running` with no
//! live owner), and it never writes the contract's `timeout`. Where the two meet, they
//! convert ([`RunEnd::contract_status`], `From<TrialStatus>`), and a test checks that
//! they spell the states they share alike.

use crate::core::contracts::{RunStatus, TrialStatus};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Where a run is in its life: `queued → running → succeeded | failed | cancelled`, or
/// `interrupted` when it is `running` in the store but its owner is gone (it can be
/// resumed). A separate enum from the contract's [`RunStatus`], which names only how a
/// run ended and has a `timeout` the store never writes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunState {
    /// Created, never driven.
    Queued,
    /// Driven by a live owner.
    Running,
    /// Ended: at least one trial succeeded and the service finalized it.
    Succeeded,
    /// Ended: no trial succeeded, or the run itself failed.
    Failed,
    /// Ended: cancelled.
    Cancelled,
    /// Stored as `running`, but its owner is gone; never written, only reported.
    Interrupted,
}

impl RunState {
    /// Every run state.
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Interrupted,
    ];

    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    /// How the run ended, if it has.
    pub fn end(self) -> Option<RunEnd> {
        match self {
            RunState::Succeeded => Some(RunEnd::Succeeded),
            RunState::Failed => Some(RunEnd::Failed),
            RunState::Cancelled => Some(RunEnd::Cancelled),
            RunState::Queued | RunState::Running | RunState::Interrupted => None,
        }
    }

    /// Whether the run has ended (nothing more to resume, cancel or sync later).
    pub fn is_final(self) -> bool {
        self.end().is_some()
    }
}

/// How a run ends: the states [`Store::finish_run`](super::Store::finish_run) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEnd {
    /// At least one trial succeeded and the service finalized the run.
    Succeeded,
    /// No trial succeeded, or the run itself failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

impl RunEnd {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        RunState::from(self).as_str()
    }

    /// The contract status that tells the service how the run ended (`finalize_run`).
    pub fn contract_status(self) -> RunStatus {
        match self {
            RunEnd::Succeeded => RunStatus::Succeeded,
            RunEnd::Failed => RunStatus::Failed,
            RunEnd::Cancelled => RunStatus::Cancelled,
        }
    }

    /// The run event that records this end: `ml.run.exception` for a failure, else
    /// `ml.run.stop`.
    pub fn event_kind(self) -> &'static str {
        match self {
            RunEnd::Failed => "ml.run.exception",
            RunEnd::Succeeded | RunEnd::Cancelled => "ml.run.stop",
        }
    }
}

impl From<RunEnd> for RunState {
    fn from(end: RunEnd) -> RunState {
        match end {
            RunEnd::Succeeded => RunState::Succeeded,
            RunEnd::Failed => RunState::Failed,
            RunEnd::Cancelled => RunState::Cancelled,
        }
    }
}

/// Where a trial is: `running` until the service answers (or the run stops it), then one
/// of the contract's outcomes ([`TrialStatus`], which has no `running`: hence this enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrialState {
    /// Started, not yet recorded.
    Running,
    /// Trained and evaluated.
    Succeeded,
    /// Failed (the call, the reply's checks, or the service said so).
    Failed,
    /// The service did not run it (e.g. an impossible architecture).
    Skipped,
    /// Stopped because its run was cancelled or failed.
    Cancelled,
    /// Stopped early by the run's pruner (DESIGN §13).
    Pruned,
}

impl TrialState {
    /// Every trial state.
    pub const ALL: [TrialState; 6] = [
        TrialState::Running,
        TrialState::Succeeded,
        TrialState::Failed,
        TrialState::Skipped,
        TrialState::Cancelled,
        TrialState::Pruned,
    ];

    /// The states a run counts in `trials_completed`, and a resume does not run again.
    pub const COMPLETED: [TrialState; 3] = [
        TrialState::Succeeded,
        TrialState::Failed,
        TrialState::Pruned,
    ];

    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Running => "running",
            TrialState::Succeeded => "succeeded",
            TrialState::Failed => "failed",
            TrialState::Skipped => "skipped",
            TrialState::Cancelled => "cancelled",
            TrialState::Pruned => "pruned",
        }
    }

    /// Whether the run counts the trial as completed (see [`TrialState::COMPLETED`]).
    pub fn is_completed(self) -> bool {
        TrialState::COMPLETED.contains(&self)
    }

    /// Whether recording the trial in this state queues its MLflow sync: succeeded,
    /// failed, cancelled or pruned (a skipped trial is not mirrored).
    pub fn queues_sync(self) -> bool {
        matches!(
            self,
            TrialState::Succeeded | TrialState::Failed | TrialState::Cancelled | TrialState::Pruned
        )
    }
}

impl From<TrialStatus> for TrialState {
    fn from(status: TrialStatus) -> TrialState {
        match status {
            TrialStatus::Succeeded => TrialState::Succeeded,
            TrialStatus::Failed => TrialState::Failed,
            TrialStatus::Skipped => TrialState::Skipped,
            TrialStatus::Cancelled => TrialState::Cancelled,
            TrialStatus::Pruned => TrialState::Pruned,
        }
    }
}

/// What [`Store::request_cancel`](super::Store::request_cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// A live owner drives the run; it cancels it at its next heartbeat.
    Cancelling,
    /// The run has ended: it was cancelled now (nobody drove it), or had already ended
    /// this way.
    Ended(RunEnd),
}

impl CancelOutcome {
    /// What `runs cancel` prints: `cancelling`, or the state the run ended in.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Cancelling => "cancelling",
            CancelOutcome::Ended(end) => end.as_str(),
        }
    }
}

/// A state name the store does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState {
    /// `run` or `trial`.
    pub of: &'static str,
    /// The name found.
    pub name: String,
}

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} state {:?}", self.of, self.name)
    }
}

impl std::error::Error for UnknownState {}

/// Display, `FromStr`, serde and SQL conversions of a state enum, all through its
/// `as_str` and `ALL`, so the stored, printed and JSON names are the same text.
macro_rules! named_state {
    ($state:ident, $of:literal) => {
        impl fmt::Display for $state {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $state {
            type Err = UnknownState;

            fn from_str(name: &str) -> Result<$state, UnknownState> {
                $state::ALL
                    .into_iter()
                    .find(|state| state.as_str() == name)
                    .ok_or_else(|| UnknownState {
                        of: $of,
                        name: name.to_owned(),
                    })
            }
        }

        impl Serialize for $state {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $state {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$state, D::Error> {
                let name = String::deserialize(deserializer)?;
                name.parse().map_err(de::Error::custom)
            }
        }

        impl ToSql for $state {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $state {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<$state> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

named_state!(RunState, "run");
named_state!(TrialState, "trial");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_json_and_sql() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for state in RunState::ALL {
            let name = state.as_str();
            assert_eq!(name.parse::<RunState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<RunState>(name.into()).unwrap(),
                state
            );
            let stored: String = conn.query_row("SELECT ?1", [state], |r| r.get(0)).unwrap();
            assert_eq!(stored, name);
            let read: RunState = conn.query_row("SELECT ?1", [name], |r| r.get(0)).unwrap();
            assert_eq!(read, state);
        }
        for state in TrialState::ALL {
            let name = state.as_str();
            assert_eq!(name.parse::<TrialState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            let read: TrialState = conn.query_row("SELECT ?1", [name], |r| r.get(0)).unwrap();
            assert_eq!(read, state);
        }
        assert!("timeout".parse::<RunState>().is_err());
        assert!(conn
            .query_row("SELECT 'pending'", [], |r| r.get::<_, TrialState>(0))
            .is_err());
    }

    #[test]
    fn the_states_shared_with_the_contracts_are_spelled_alike() {
        for end in [RunEnd::Succeeded, RunEnd::Failed, RunEnd::Cancelled] {
            assert_eq!(end.as_str(), end.contract_status().as_str());
            assert_eq!(RunState::from(end).end(), Some(end));
        }
        for status in [
            TrialStatus::Succeeded,
            TrialStatus::Failed,
            TrialStatus::Skipped,
            TrialStatus::Cancelled,
            TrialStatus::Pruned,
        ] {
            assert_eq!(TrialState::from(status).as_str(), status.as_str());
        }
    }
}
