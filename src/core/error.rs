//! The bridge's error model (DESIGN §9): one [`BridgeError`] type carrying an
//! [`ErrorClass`], a human message, and where known the op, the attempt number and
//! the run id, plus free-form `details` (Python traceback, return code, …).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::error::Error;
use std::fmt;
use std::sync::Arc;

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
/// Where the failure has an underlying cause (an I/O or SQLite error, a JSON error, a
/// Python exception, another `BridgeError`), [`Error::source`] returns it. The cause
/// is context for logs and debuggers only: it is not part of the message, the JSON
/// form or equality.
///
/// ```
/// use cerebros_bridge::core::error::{BridgeError, ErrorClass};
/// use std::error::Error;
/// let io = std::io::Error::from(std::io::ErrorKind::NotFound);
/// let err = BridgeError::new(ErrorClass::Contract, "unknown op 'nope'")
///     .with_op("nope")
///     .with_source(io);
/// assert_eq!(err.class, ErrorClass::Contract);
/// assert!(err.to_string().contains("unknown op"));
/// assert_eq!(err.source().unwrap().to_string(), "entity not found");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The underlying cause, where there is one (see [`BridgeError::with_source`]).
    #[serde(skip)]
    source: Option<Arc<dyn Error + Send + Sync>>,
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
            source: None,
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

    /// Keeps `cause` as the error's [`source`](Error::source): an error value
    /// (`std::io::Error`, `rusqlite::Error`, `serde_json::Error`, a `BridgeError`, …)
    /// or, where only its text survives (a Python exception), that text. The message,
    /// the JSON form and equality do not change.
    pub fn with_source(mut self, cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        self.source = Some(Arc::from(cause.into()));
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

/// Errors are equal when their fields are; their causes are not compared.
impl PartialEq for BridgeError {
    fn eq(&self, other: &Self) -> bool {
        let BridgeError {
            class,
            message,
            op,
            attempt,
            run_id,
            details,
            source: _,
        } = self;
        *class == other.class
            && *message == other.message
            && *op == other.op
            && *attempt == other.attempt
            && *run_id == other.run_id
            && *details == other.details
    }
}

impl Error for BridgeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|cause| cause as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_cause() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry")
    }

    #[test]
    fn source_is_the_cause_and_changes_nothing_else() {
        let plain = BridgeError::new(ErrorClass::SystemError, "cannot start a thread")
            .with_op("echo")
            .with_detail("pid", 7);
        assert!(plain.source().is_none());
        let caused = plain.clone().with_source(io_cause());
        let source = caused.source().expect("the cause is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(caused.to_string(), plain.to_string());
        assert_eq!(caused.to_json(), plain.to_json());
        assert_eq!(caused, plain);
        let copy = caused.clone();
        assert_eq!(copy.source().unwrap().to_string(), "no entry");
    }

    #[test]
    fn a_wrapped_error_and_a_text_cause_are_sources_too() {
        let inner =
            BridgeError::new(ErrorClass::Contract, "missing run_id").with_source(io_cause());
        let outer = BridgeError::new(ErrorClass::ParseError, "invalid report").with_source(inner);
        let inner = outer
            .source()
            .and_then(|s| s.downcast_ref::<BridgeError>())
            .expect("the wrapped BridgeError");
        assert_eq!(inner.message, "missing run_id");
        assert_eq!(inner.source().unwrap().to_string(), "no entry");
        let text = BridgeError::new(ErrorClass::Exception, "ValueError: bad")
            .with_source("ValueError: bad".to_owned());
        assert_eq!(text.source().unwrap().to_string(), "ValueError: bad");
    }

    #[test]
    fn errors_built_from_a_cause_keep_it() {
        let err = crate::core::payload::parse_payload("{\"x\": tru}", 1024).unwrap_err();
        assert!(err
            .source()
            .is_some_and(|s| s.downcast_ref::<serde_json::Error>().is_some()));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = crate::core::config::Config::load_with(Some(&missing), &|_| None, dir.path())
            .unwrap_err();
        let read = err.source().expect("the read error");
        let io = read
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn a_deserialized_error_has_no_source() {
        let caused = BridgeError::new(ErrorClass::Timeout, "late").with_source(io_cause());
        let back: BridgeError = serde_json::from_value(caused.to_json()).unwrap();
        assert_eq!(back, caused);
        assert!(back.source().is_none());
    }
}
