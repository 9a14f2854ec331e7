//! The bridge's error model (DESIGN §9): one [`BridgeError`] type carrying an
//! [`ErrorClass`], a human message, and where known the op, the attempt number and
//! the run id, plus free-form `details` (Python traceback, return code, …).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The class of a failure. Retry policy, CLI exit codes and the Python exception
/// hierarchy are all keyed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The bridge is disabled, or the service module or a package it needs is missing.
    Dependency,
    /// An invalid configuration file or value.
    Config,
    /// Invalid input: a malformed or oversized payload, an unknown contract or
    /// version, an unknown or private op.
    Contract,
    /// The call did not finish before its deadline.
    Timeout,
    /// The Python op raised an exception.
    Exception,
    /// A worker process exited or was killed while running the call.
    SubprocessExit,
    /// The op's result could not be read (not a dict, not convertible, not finite).
    ParseError,
    /// The bridge itself failed (a worker thread died, an OS call failed).
    SystemError,
    /// The request queue is full.
    Overloaded,
    /// The call was cancelled by its caller or by shutdown.
    Cancelled,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::Dependency,
        ErrorClass::Config,
        ErrorClass::Contract,
        ErrorClass::Timeout,
        ErrorClass::Exception,
        ErrorClass::SubprocessExit,
        ErrorClass::ParseError,
        ErrorClass::SystemError,
        ErrorClass::Overloaded,
        ErrorClass::Cancelled,
    ];

    /// The snake_case name used on the wire, in config and in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Dependency => "dependency",
            ErrorClass::Config => "config",
            ErrorClass::Contract => "contract",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Exception => "exception",
            ErrorClass::SubprocessExit => "subprocess_exit",
            ErrorClass::ParseError => "parse_error",
            ErrorClass::SystemError => "system_error",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Cancelled => "cancelled",
        }
    }

    /// Parses a snake_case class name.
    pub fn parse(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether the default retry policy retries this class (DESIGN §2).
    pub fn retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorClass::Timeout | ErrorClass::SubprocessExit | ErrorClass::SystemError
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed bridge operation.
///
/// ```
/// use cerebros_bridge::core::error::{BridgeError, ErrorClass};
/// let err = BridgeError::new(ErrorClass::Contract, "unknown op 'nope'").with_op("nope");
/// assert_eq!(err.class, ErrorClass::Contract);
/// assert!(err.to_string().contains("unknown op"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeError {
    /// What kind of failure this is.
    #[serde(rename = "class")]
    pub class: ErrorClass,
    /// A one-line, human-readable description.
    pub message: String,
    /// The op being called, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The 1-based attempt that produced this error (0 when no attempt was made).
    pub attempt: u32,
    /// The run id of the payload, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Class-specific details: `type`, `traceback`, `returncode`, `stderr_excerpt`, …
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub details: Map<String, Value>,
}

/// Shorthand for results whose error is a [`BridgeError`].
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;

impl BridgeError {
    /// A new error of `class` with `message` and no context.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        BridgeError {
            class,
            message: message.into(),
            op: None,
            attempt: 0,
            run_id: None,
            details: Map::new(),
        }
    }

    /// Sets the op.
    pub fn with_op(mut self, op: impl Into<String>) -> Self {
        self.op = Some(op.into());
        self
    }

    /// Sets the attempt number.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the run id.
    pub fn with_run_id(mut self, run_id: Option<String>) -> Self {
        self.run_id = run_id;
        self
    }

    /// Adds one detail.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The error as the JSON object the CLI prints under `"error"`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::String(self.message.clone()))
    }
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)?;
        if let Some(op) = &self.op {
            write!(f, " (op {op}")?;
            if self.attempt > 0 {
                write!(f, ", attempt {}", self.attempt)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for BridgeError {}
