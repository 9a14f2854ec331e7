//! `cerebros-bridge validate`: environment checks, one line (or JSON entry) each.
//!
//! The checks run in a fixed order and each stands on its own: a failed check does
//! not stop the later ones, which run against `Config::default()` when the config
//! itself cannot be loaded.

mod checks;
mod python;

use super::output::{self, EXIT_FAILURE, EXIT_OK};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::path::Path;

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Print one JSON document: {"ok": bool, "checks": [{"name", "status", "detail", "hint"}]}.
    #[arg(long)]
    json: bool,
}

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
    /// The label printed at the start of a text line.
    fn label(self) -> &'static str {
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

/// Runs every check, prints them and returns 0 when none failed, 1 otherwise.
pub fn run(config_path: Option<&Path>, args: &ValidateArgs) -> i32 {
    let checks = checks::run_all(config_path);
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if args.json {
        output::print_json(&json!({"ok": ok, "checks": checks}), false);
    } else {
        print_text(&checks);
    }
    if ok {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}

/// Prints one line per check, a hint line under each one that did not pass, and a
/// summary line.
fn print_text(checks: &[Check]) {
    for check in checks {
        output::stdout_line(&format!(
            "{:<4}  {}: {}",
            check.status.label(),
            check.name,
            check.detail
        ));
        if let Some(hint) = &check.hint {
            output::stdout_line(&format!("      hint: {hint}"));
        }
    }
    output::stdout_line(&summary(checks));
}

/// `N checks: X ok, Y warn, Z failed`, then the verdict.
fn summary(checks: &[Check]) -> String {
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
