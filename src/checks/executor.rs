//! `executor`: where trials run (DESIGN §12). Under `ray`, the interpreter connects to the
//! cluster the way a run does (`ray_connect`: the Ray version, then the cluster), reports
//! its nodes and CPUs, and disconnects; an unreachable cluster or a missing or too old Ray
//! fails.

use super::Check;
use crate::client::{CallOptions, Client};
use crate::core::config::{Config, ExecutorKind, Mode};
use crate::nas::executor::ExecutorSettings;
use serde_json::json;
use std::time::Duration;

/// The longest the `ray_disconnect` after the check may take.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `executor` check.
pub(super) fn check_executor(config: &Config) -> Check {
    if config.executor.kind == ExecutorKind::Local {
        return Check::ok("executor", local_detail(config.mode));
    }
    let settings = ExecutorSettings::from_config(config);
    let shown = settings
        .address
        .as_deref()
        .unwrap_or("unset: a local Ray per run");
    let hint = "install ray into the venv (pip install 'cerebros_service[ray]'), start the \
                cluster (`ray start --head`) and set executor.address (CEREBROS_EXECUTOR_ADDRESS) \
                to the address it prints";
    let mut probe = config.clone();
    probe.invoke.pool_size = 1;
    probe.enabled = true;
    probe.mode = Mode::InProcess;
    let client = match Client::start(&probe) {
        Ok(client) => client,
        Err(err) => return Check::fail("executor", err.message, hint),
    };
    let options = |timeout| CallOptions {
        timeout: Some(timeout),
        max_retries: Some(0),
        ..CallOptions::default()
    };
    let connected = settings.connect_blocking(&client);
    let _ = client.call_blocking_with("ray_disconnect", json!({}), options(DISCONNECT_TIMEOUT));
    client.shutdown(Duration::from_millis(200));
    match connected {
        Ok(reply) => {
            let cpus = reply["resources"]["CPU"].as_f64().unwrap_or(0.0);
            Check::ok(
                "executor",
                format!(
                    "ray {}, {shown}: {} node(s), {cpus} CPU(s)",
                    reply["ray_version"].as_str().unwrap_or("?"),
                    reply["nodes"].as_u64().unwrap_or(0),
                ),
            )
        }
        Err(err) => {
            let message: String = err.message.chars().take(400).collect();
            Check::fail("executor", message, hint)
        }
    }
}

/// Where local trials run; under `in_process`, that parallel trials share one
/// interpreter (the numpy trainer trains one at a time there).
fn local_detail(mode: Mode) -> String {
    let shared = match mode {
        Mode::InProcess => {
            "; one interpreter, so the numpy trainer trains one trial at a time \
             (mode = \"worker_process\" trains parallel trials at once)"
        }
        _ => "",
    };
    format!("local: trials run in {} mode{shared}", mode.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_executor_says_when_trials_share_one_interpreter() {
        assert!(local_detail(Mode::InProcess).contains("one trial at a time"));
        assert_eq!(
            local_detail(Mode::WorkerProcess),
            "local: trials run in worker_process mode"
        );
    }
}
