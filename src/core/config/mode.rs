//! [`Mode`]: how a call is executed, and its snake_case names.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a mode name must be.
pub(super) const MODE_EXPECTED: &str = "expected one of in_process, worker_process, subprocess";

/// How a call is executed (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Embedded CPython on a pool of worker threads.
    #[default]
    InProcess,
    /// Long-lived Python children speaking newline-delimited JSON.
    WorkerProcess,
    /// One Python process per call.
    Subprocess,
}

impl Mode {
    /// Every mode, in declaration order.
    pub const ALL: [Mode; 3] = [Mode::InProcess, Mode::WorkerProcess, Mode::Subprocess];

    /// The snake_case name used in config, on the CLI and in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::InProcess => "in_process",
            Mode::WorkerProcess => "worker_process",
            Mode::Subprocess => "subprocess",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown [`Mode`] name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseModeError {
    /// The text that is not a mode name.
    pub input: String,
}

impl fmt::Display for ParseModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown mode {:?}: {MODE_EXPECTED}", self.input)
    }
}

impl std::error::Error for ParseModeError {}

impl FromStr for Mode {
    type Err = ParseModeError;

    /// Parses a snake_case mode name.
    ///
    /// ```
    /// use cerebros_bridge::core::config::Mode;
    /// assert_eq!("worker_process".parse::<Mode>().unwrap(), Mode::WorkerProcess);
    /// assert!("fast".parse::<Mode>().is_err());
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseModeError {
                input: s.to_owned(),
            })
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse()
            .map_err(|_| serde::de::Error::custom(MODE_EXPECTED))
    }
}
