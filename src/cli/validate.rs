//! `cerebros-bridge validate`: prints the environment checks of
//! [`cerebros_bridge::checks`], one line (or JSON entry) each.

use super::output::{self, EXIT_FAILURE, EXIT_OK};
use cerebros_bridge::checks;
use clap::Args;
use serde_json::json;
use std::path::Path;

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Print one JSON document: {"ok": bool, "checks": [{"name", "status", "detail", "hint"}]}.
    #[arg(long)]
    json: bool,
}

/// Runs every check, prints them and returns 0 when none failed, 1 otherwise.
pub fn run(config_path: Option<&Path>, args: &ValidateArgs) -> i32 {
    let checks = checks::run(config_path);
    let ok = checks::passed(&checks);
    if args.json {
        output::print_json(&json!({"ok": ok, "checks": checks}), false);
    } else {
        // One line per check, a hint line under each one that did not pass, a summary.
        for check in &checks {
            output::stdout_line(&check.to_string());
        }
        output::stdout_line(&checks::summary(&checks));
    }
    if ok {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}
