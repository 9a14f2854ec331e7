//! The environment checks of `cerebros-bridge validate`, for any host: the config, the
//! Python the venv holds against the embedded one, the packages, the service module and
//! its ops, the store, the mode's needs, MLflow and the telemetry collector. [`Client::start`](crate::Client::start)
//! refuses a venv of another Python than the embedded one and a service module that does
//! not import; these checks report everything at once, each with how to fix it.
//!
//! ```no_run
//! let checks = cerebros_bridge::checks::run(None);
//! for check in &checks {
//!     println!("{check}");
//! }
//! println!("{}", cerebros_bridge::checks::summary(&checks));
//! assert!(cerebros_bridge::checks::passed(&checks));
//! ```
//!
//! The checks run in a fixed order and each stands on its own: a failed check does not
//! stop the later ones, which run against `Config::default()` when the config itself
//! cannot be loaded.

mod bridge;
mod executor;
mod python;
mod telemetry;

use serde::Serialize;
use std::fmt;
use std::path::Path;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Ok,
    /// Works, but something is missing or not available yet.
    Warn,
    /// Failed: the bridge will not work until it is fixed.
    Fail,
}

impl Status {
    /// The label at the start of a check's text line.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Which check this is (`config`, `python`, …).
    pub name: &'static str,
    /// Whether it passed.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it (absent when the check passed).
    pub hint: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    /// A warning, with how to fix it.
    pub fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    /// A failed check, with how to fix it.
    pub fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// `ok    name: detail`, and a `hint:` line under a check that did not pass (the text
/// `cerebros-bridge validate` prints).
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4}  {}: {}",
            self.status.label(),
            self.name,
            self.detail
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n      hint: {hint}")?;
        }
        Ok(())
    }
}

/// Runs every check in order, loading the config from `config_path` (else
/// `CEREBROS_CONFIG`, `./cerebros.toml`, the environment and the defaults, as
/// [`Config::load`](crate::Config::load) does).
pub fn run(config_path: Option<&Path>) -> Vec<Check> {
    bridge::run_all(config_path)
}

/// Whether no check failed (warnings pass).
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// `N checks: X ok, Y warn, Z failed`, then the verdict.
pub fn summary(checks: &[Check]) -> String {
    let count = |status: Status| checks.iter().filter(|c| c.status == status).count();
    let failed = count(Status::Fail);
    let verdict = if failed == 0 {
        "the bridge is ready"
    } else {
        "fix the failed checks above"
    };
    format!(
        "{} checks: {} ok, {} warn, {} failed; {verdict}",
        checks.len(),
        count(Status::Ok),
        count(Status::Warn),
        failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_counts_each_status() {
        let checks = [
            Check::ok("a", "fine"),
            Check::warn("b", "meh", "do x"),
            Check::fail("c", "broken", "do y"),
        ];
        assert_eq!(
            summary(&checks),
            "3 checks: 1 ok, 1 warn, 1 failed; fix the failed checks above"
        );
        assert!(!passed(&checks));
        assert!(passed(&checks[..2]));
    }

    #[test]
    fn a_check_prints_its_line_and_its_hint() {
        assert_eq!(
            Check::ok("config", "defaults").to_string(),
            "ok    config: defaults"
        );
        assert_eq!(
            Check::fail("store", "no folder", "make one").to_string(),
            "FAIL  store: no folder\n      hint: make one"
        );
    }

    #[test]
    fn checks_serialize_with_lowercase_status_and_null_hint() {
        let value = serde_json::to_value(Check::ok("config", "defaults")).unwrap();
        assert_eq!(
            value,
            json!({"name": "config", "status": "ok", "detail": "defaults", "hint": null})
        );
    }
}
