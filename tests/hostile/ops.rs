//! What is an op (DESIGN §10, issue 9 item 1): only functions defined in the service
//! module and callables it lists in `__bridge_ops__`, decided by one implementation for
//! every mode; `validate` lists them.

use crate::common::root;
use crate::{service_config, services, MODES};
use cerebros_bridge::client::Client;
use cerebros_bridge::core::config::Mode;
use cerebros_bridge::core::error::{BridgeError, ErrorClass};
use serde_json::{json, Value};
use std::process::Command;

/// A client of `module` from `services/` (see [`service_config`]).
fn client(mode: Mode, module: &str) -> Client {
    Client::start(&service_config(mode, module)).expect("the client starts")
}

fn refusal(mode: Mode, result: Result<Value, BridgeError>, op: &str) -> BridgeError {
    let err = match result {
        Ok(value) => panic!("{mode}: {op} must not be an op, it returned {value}"),
        Err(err) => err,
    };
    assert_eq!(err.class, ErrorClass::Contract, "{mode} {op}: {err}");
    err
}

/// `from subprocess import run` exposed `run`: a dict payload ran the command its keys
/// name, in key order (`/usr/bin/touch /var/tmp/…/created-by-payload`). Builtins,
/// `os.system`, helpers imported from other modules, partials, callable instances,
/// classes and modules are refused before anything runs, in every mode.
#[test]
fn imported_callables_builtins_partials_and_instances_are_not_ops() {
    // Keys cross in sorted order: the target must sort after the command.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let target = dir.path().join("created-by-payload");
    for mode in MODES {
        let client = client(mode, "ops_imports");
        let payload = json!({"/usr/bin/touch": 1, target.to_str().unwrap(): 2});
        let err = refusal(mode, client.call_blocking("run", payload), "run");
        assert!(
            err.message.contains("imported from subprocess"),
            "{mode}: {err}"
        );
        assert!(!target.exists(), "{mode}: `run` ran a command");
        for op in [
            "system",
            "open",
            "eval",
            "shared",
            "partial",
            "instance",
            "Tool",
            "functools",
            "os",
        ] {
            refusal(mode, client.call_blocking(op, json!({"x": "1"})), op);
        }
        assert_eq!(
            client.call_blocking("own", json!({})).unwrap(),
            json!({"own": true})
        );
        assert_eq!(
            client.call_blocking("own_async", json!({})).unwrap(),
            json!({"own_async": true})
        );
    }
}

/// A module exposes an imported function, a partial or a callable object on purpose by
/// listing it in `__bridge_ops__`; an imported function it does not list stays refused.
#[test]
fn callables_listed_in_bridge_ops_are_ops() {
    for mode in MODES {
        let client = client(mode, "ops_declared");
        let call = |op: &str| client.call_blocking(op, json!({}));
        assert_eq!(call("shared").unwrap(), json!({"shared": true}), "{mode}");
        assert_eq!(call("tagged").unwrap(), json!({"tag": "x"}), "{mode}");
        assert_eq!(call("counter").unwrap(), json!({"counter": true}), "{mode}");
        assert_eq!(call("own").unwrap(), json!({"own": true}), "{mode}");
        refusal(mode, call("run"), "run");
    }
}

/// A `__bridge_ops__` naming an attribute the module lacks, or a value that is not
/// callable, is a `contract` error that names the list.
#[test]
fn a_bridge_ops_naming_missing_or_non_callable_attributes_is_a_contract_error() {
    for mode in MODES {
        let client = client(mode, "ops_bad_declaration");
        for (op, why) in [
            ("missing", "has no such attribute"),
            ("LIMIT", "not callable"),
        ] {
            let err = refusal(mode, client.call_blocking(op, json!({})), op);
            assert!(
                err.message
                    .contains("ops_bad_declaration.__bridge_ops__ lists"),
                "{mode}: {err}"
            );
            assert!(err.message.contains(why), "{mode}: {err}");
        }
        assert_eq!(
            client.call_blocking("own", json!({})).unwrap(),
            json!({"own": true})
        );
    }
}

/// `cerebros-bridge validate` with `module` from `tests/hostile/services`.
fn validate(module: &str, json: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
    command.arg("validate");
    if json {
        command.arg("--json");
    }
    command
        .current_dir(root())
        .env("CEREBROS_MODULE", module)
        .env("CEREBROS_REPO", services())
        .env("MLFLOW_TRACKING_URI", "off")
        .output()
        .expect("validate runs")
}

/// The `ops` entry of `validate --json`.
fn ops_check(module: &str) -> (i32, Value) {
    let out = validate(module, true);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let check = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "ops")
        .cloned()
        .unwrap_or_else(|| panic!("no ops check in {doc}"));
    (out.status.code().unwrap_or(-1), check)
}

/// `validate` lists exactly the ops the module exposes (text and `--json`), and fails
/// on a `__bridge_ops__` that names something missing or not callable.
#[test]
fn validate_lists_the_ops_and_fails_on_a_bad_bridge_ops() {
    let (_, check) = ops_check("ops_imports");
    assert_eq!(check["status"], "ok", "{check}");
    assert_eq!(
        check["detail"],
        "ops_imports: 3 ops: health, own, own_async"
    );
    let text = String::from_utf8(validate("ops_declared", false).stdout).unwrap();
    assert!(
        text.contains("ok    ops: ops_declared: 5 ops: counter, health, own, shared, tagged\n"),
        "{text}"
    );
    let (code, check) = ops_check("ops_bad_declaration");
    assert_eq!(code, 1, "{check}");
    assert_eq!(check["status"], "fail", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("ops_bad_declaration: 2 ops: health, own; "),
        "{detail}"
    );
    assert!(detail.contains("\"LIMIT\""), "{detail}");
    assert!(detail.contains("\"missing\""), "{detail}");
}
