//! NAS runs against a service that lies in its `run_trial` replies
//! (`services/nas_liar.py`), through the CLI (`run`, `runs show --json`), in every mode;
//! and run specs and stored strings that must never reach the store or a terminal raw.

use crate::common::{self, trials_by_index};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const MODES: [&str; 3] = ["in_process", "worker_process", "subprocess"];

/// A scratch folder with its own store and spec.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a spec of `trials` iris trials (2 epochs) and returns its path.
    fn spec(&self, trials: u32) -> String {
        let path = self.path(&format!("spec-{trials}.toml"));
        std::fs::write(&path, common::iris_spec("liar", trials, 2)).unwrap();
        path.display().to_string()
    }

    /// The CLI on the liar service in `mode`, telling `lies` (trial index -> lie).
    fn command(&self, mode: &str, lies: &Value, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
        command
            .args(args)
            .current_dir(common::root())
            .env(
                "CEREBROS_STORE_URL",
                format!("sqlite://{}", self.path("store.db").display()),
            )
            .env("CEREBROS_MODULE", "nas_liar")
            .env("CEREBROS_REPO", crate::services())
            .env("CEREBROS_MODE", mode)
            .env("MLFLOW_TRACKING_URI", "off")
            .env("NAS_LIES", lies.to_string())
            .stdin(Stdio::null());
        command
    }

    /// Runs the CLI; returns its exit code, its stdout as JSON (or Null) and its stderr.
    fn run(&self, mode: &str, lies: &Value, args: &[&str]) -> (i32, Value, String) {
        let out = self.command(mode, lies, args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(&stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `runs show ID --json`.
    fn show(&self, run_id: &str) -> Value {
        let (code, doc, stderr) = self.run(
            "in_process",
            &json!({}),
            &["runs", "show", run_id, "--json"],
        );
        assert_eq!(code, 0, "{stderr}");
        doc
    }
}

/// Every trial of a finished run is finished, and every failed one says why.
fn assert_settled(doc: &Value, context: &str) {
    for trial in doc["trials"].as_array().unwrap() {
        assert_ne!(trial["status"], "running", "{context}: {trial}");
        if trial["status"] == "failed" {
            assert!(trial["error"]["message"].is_string(), "{context}: {trial}");
        }
    }
}

#[test]
fn a_reply_naming_another_runs_trial_is_that_trials_contract_failure() {
    let scratch = Scratch::new();
    let (code, first, stderr) = scratch.run(
        "in_process",
        &json!({}),
        &["run", &scratch.spec(1), "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let victim = first["run"]["run_id"].as_str().unwrap().to_owned();
    let victim_trial = first["trials"][0].clone();
    let victim_id = victim_trial["trial_id"].as_str().unwrap().to_owned();
    for mode in MODES {
        let lies = json!({
            "0": format!("ids={victim},{victim_id}"),
            "1": "ids=run-nobody,run-nobody-t001",
        });
        let (code, doc, stderr) = scratch.run(mode, &lies, &["run", &scratch.spec(3), "--json"]);
        assert_eq!(code, 0, "{mode}: {stderr}");
        assert_eq!(doc["run"]["status"], "succeeded", "{mode}: {doc}");
        let trials = trials_by_index(&doc);
        assert_eq!(trials.len(), 3, "{mode}: {doc}");
        for trial in &trials[..2] {
            assert_eq!(trial["status"], "failed", "{mode}: {trial}");
            assert_eq!(trial["error"]["class"], "contract", "{mode}: {trial}");
            assert_eq!(
                trial["error"]["details"]["key"], "run_id",
                "{mode}: {trial}"
            );
        }
        assert_eq!(trials[2]["status"], "succeeded", "{mode}: {doc}");
        assert_settled(&doc, mode);
        let victim_now = scratch.show(&victim);
        assert_eq!(victim_now["trials"].as_array().unwrap().len(), 1, "{mode}");
        assert_eq!(
            victim_now["trials"][0], victim_trial,
            "{mode}: the other run's trial changed"
        );
    }
}

#[test]
fn a_reply_that_does_not_check_out_fails_its_trial_and_the_run_still_ends() {
    let lies = [
        "string_metric",
        "bool_metric",
        "nan_metric",
        "accuracy_7",
        "no_objective",
        "bad_status",
        "silent_failure",
    ];
    let told: serde_json::Map<String, Value> = lies
        .iter()
        .enumerate()
        .map(|(i, lie)| (i.to_string(), json!(lie)))
        .collect();
    let told = Value::Object(told);
    for mode in MODES {
        let scratch = Scratch::new();
        let spec = scratch.spec(lies.len() as u32 + 1);
        let (code, doc, stderr) = scratch.run(mode, &told, &["run", &spec, "--json"]);
        assert_eq!(code, 0, "{mode}: {stderr}");
        assert_eq!(doc["run"]["status"], "succeeded", "{mode}: {doc}");
        let trials = trials_by_index(&doc);
        for (trial, lie) in trials.iter().zip(lies) {
            assert_eq!(trial["status"], "failed", "{mode} {lie}: {trial}");
            let class = match lie {
                "silent_failure" => "exception", // the service's own word: it failed
                "nan_metric" | "bad_status" => "parse_error", // not even a trial_reported
                _ => "contract",
            };
            assert_eq!(trial["error"]["class"], class, "{mode} {lie}: {trial}");
        }
        let best = &trials[lies.len()];
        assert_eq!(best["status"], "succeeded", "{mode}: {doc}");
        assert_eq!(
            doc["run"]["best_trial_id"], best["trial_id"],
            "{mode}: {doc}"
        );
        assert_settled(&doc, mode);
        let run_id = doc["run"]["run_id"].as_str().unwrap();
        assert_eq!(scratch.show(run_id)["run"]["status"], "succeeded", "{mode}");
    }
}

#[test]
fn a_run_holding_a_text_metric_from_before_the_checks_can_still_finish() {
    let scratch = Scratch::new();
    let spec_path = scratch.spec(2);
    let spec = cerebros_bridge::nas::spec::RunSpec::load(std::path::Path::new(&spec_path)).unwrap();
    let store = cerebros_bridge::nas::store::Store::open(&scratch.path("store.db")).unwrap();
    store.create_run("run-old", &spec).unwrap();
    let old = cerebros_bridge::nas::store::TrialRecord {
        run_id: "run-old".into(),
        trial_id: "run-old-t000".into(),
        index: 0,
        seed: 1,
        status: cerebros_bridge::nas::store::TrialState::Succeeded,
        metrics: json!({"val_accuracy": "high"}),
        parameters: json!({}),
        duration_ms: 1,
        artifact_uri: None,
        error: None,
        attempts: 1,
        started_at: None,
        finished_at: None,
        mlflow_run_id: None,
        placement: None,
    };
    store.record_trial(&old, None).unwrap();
    drop(store);
    let (code, doc, stderr) = scratch.run(
        "in_process",
        &json!({}),
        &["runs", "resume", "run-old", "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["status"], "succeeded", "{doc}");
    assert_eq!(doc["run"]["best_trial_id"], "run-old-t001", "{doc}");
}

#[test]
fn an_artifact_outside_the_runs_folder_is_refused() {
    let lies = json!({"0": "artifact_outside", "1": "artifact_symlink"});
    for mode in MODES {
        let scratch = Scratch::new();
        let (code, doc, stderr) = scratch.run(mode, &lies, &["run", &scratch.spec(3), "--json"]);
        assert_eq!(code, 0, "{mode}: {stderr}");
        let trials = trials_by_index(&doc);
        for trial in &trials[..2] {
            assert_eq!(trial["status"], "failed", "{mode}: {trial}");
            assert_eq!(
                trial["error"]["details"]["key"], "artifact_uri",
                "{mode}: {trial}"
            );
            assert!(trial["artifact_uri"].is_null(), "{mode}: {trial}");
        }
        let kept = trials[2]["artifact_uri"].as_str().unwrap();
        let folder = scratch.path("artifacts").canonicalize().unwrap();
        let kept = std::path::Path::new(kept.strip_prefix("file://").unwrap());
        assert!(
            kept.canonicalize().unwrap().starts_with(folder),
            "{mode}: {kept:?}"
        );
        assert_settled(&doc, mode);
    }
}

#[test]
fn a_store_error_while_recording_a_trial_fails_only_that_trial() {
    let scratch = Scratch::new();
    let store_file = scratch.path("store.db");
    drop(cerebros_bridge::nas::store::Store::open(&store_file).unwrap());
    let db = rusqlite::Connection::open(&store_file).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_trial BEFORE UPDATE ON model_trials
         WHEN NEW.idx = 1 AND NEW.status = 'succeeded'
         BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END;",
    )
    .unwrap();
    drop(db);
    let (code, doc, stderr) = scratch.run(
        "in_process",
        &json!({}),
        &["run", &scratch.spec(3), "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["status"], "succeeded", "{doc}");
    let trials = trials_by_index(&doc);
    assert_eq!(trials[1]["status"], "failed", "{doc}");
    let message = trials[1]["error"]["message"].as_str().unwrap();
    assert!(message.contains("the disk is on fire"), "{message}");
    assert_settled(&doc, "in_process");
}

#[test]
fn spec_values_are_checked_before_anything_is_stored() {
    let scratch = Scratch::new();
    let base = "name = \"bad\"\ndataset = \"sklearn:iris\"\n";
    let folder = scratch.path("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let cases = [
        (
            format!("{base}[search_space]\nminimum_neurons_per_unit = 0\n"),
            "search_space.minimum_neurons_per_unit",
        ),
        (
            format!("{base}[search_space]\np_lateral_connection = 1.5\n"),
            "search_space.p_lateral_connection",
        ),
        (
            format!("{base}[search_space]\nactivation = [\"swish\"]\n"),
            "search_space.activation",
        ),
        (
            format!("{base}[search_space]\nactivation = [\"\"]\n"),
            "search_space.activation",
        ),
        (
            format!("{base}[dataset_options]\nvalidation_split = 1.0\n"),
            "dataset_options.validation_split",
        ),
        (
            "name = \"a\\u001b[31mred\"\ndataset = \"sklearn:iris\"\n".into(),
            "name",
        ),
        (
            "name = \"a\\nb\"\ndataset = \"sklearn:iris\"\n".into(),
            "name",
        ),
        (
            format!("name = \"d\"\ndataset = \"csv:{}\"\n", folder.display()),
            "is a directory",
        ),
        (
            "name = \"z\"\ndataset = \"npz:/dev/zero\"\n".into(),
            "not a regular file",
        ),
    ];
    for (text, named) in cases {
        let spec = scratch.path("bad.toml");
        std::fs::write(&spec, &text).unwrap();
        let (code, _, stderr) =
            scratch.run("in_process", &json!({}), &["run", spec.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(named), "{text}: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "{text}: {stderr}");
    }
    let (code, doc, stderr) = scratch.run("in_process", &json!({}), &["runs", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["runs"], json!([]), "a refused spec was stored");
}

#[test]
fn stored_strings_are_printed_without_their_control_characters() {
    let scratch = Scratch::new();
    let store = cerebros_bridge::nas::store::Store::open(&scratch.path("store.db")).unwrap();
    let mut spec = cerebros_bridge::nas::spec::RunSpec::from_toml_str(
        "name = \"x\"\ndataset = \"sklearn:iris\"\n",
        &scratch.path(""),
    )
    .unwrap();
    spec.name = "evil\u{1b}]0;owned\u{7}\u{1b}[2J\0name\nnext".into();
    store.create_run("run-old", &spec).unwrap();
    store
        .finish_run(
            "run-old",
            cerebros_bridge::nas::store::RunEnd::Failed,
            Some("it broke\u{1b}[31m\r\nforged line"),
        )
        .unwrap();
    drop(store);
    for args in [&["runs", "list"][..], &["runs", "show", "run-old"][..]] {
        let out = scratch
            .command("in_process", &json!({}), args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {stdout}");
        assert!(stdout.contains("evil\\u{1b}"), "{args:?}: {stdout}");
        for raw in ['\u{1b}', '\u{7}', '\0', '\r'] {
            assert!(
                !stdout.contains(raw),
                "{args:?} printed {raw:?}: {stdout:?}"
            );
        }
        assert!(!stdout.contains("\nnext"), "{args:?}: {stdout:?}");
        assert!(!stdout.contains("\nforged line"), "{args:?}: {stdout:?}");
    }
}

mod spec_decoding {
    //! Property: any TOML document built from the spec's keys (and some others), with any
    //! values, either decodes into a spec that validates and survives the store's JSON round
    //! trip, or is refused with an error naming a key; it never panics.

    use cerebros_bridge::nas::spec::rules::rules;
    use cerebros_bridge::nas::spec::RunSpec;
    use proptest::prelude::*;

    /// Top-level keys, section keys (`section.key`) and a few unknown ones.
    fn key() -> impl Strategy<Value = String> {
        let table = rules();
        let mut keys: Vec<String> = [
            "name",
            "dataset",
            "objective",
            "direction",
            "seed",
            "search_space",
            "budget",
            "dataset_options",
            "colour",
            "budget.epochz",
            "search_space.levels",
        ]
        .map(String::from)
        .to_vec();
        for (section, rules) in [
            ("search_space", &table.search_space),
            ("budget", &table.budget),
            ("dataset_options", &table.dataset_options),
        ] {
            keys.extend(rules.keys().map(|k| format!("{section}.{k}")));
        }
        proptest::sample::select(keys)
    }

    fn value() -> impl Strategy<Value = toml::Value> {
        let words = [
            "relu",
            "ELU ",
            "swish",
            "",
            "sklearn:iris",
            "sklearn:mnist",
            "csv:/dev/zero",
            "npz:/",
            "val_loss",
            "maximize",
            "target",
            "a\u{1b}[2Jb",
            "x\0y",
            "line\nbreak",
        ];
        let leaf = prop_oneof![
            any::<i64>().prop_map(toml::Value::Integer),
            proptest::sample::select(vec![-1i64, 0, 1, 2, 3, 32, 33, 4096, 4097, 100_000])
                .prop_map(toml::Value::Integer),
            any::<f64>().prop_map(toml::Value::Float),
            proptest::sample::select(vec![0.0, 0.2, 1.0, 1.5, -0.1, 2.5, f64::NAN, f64::INFINITY])
                .prop_map(toml::Value::Float),
            any::<bool>().prop_map(toml::Value::Boolean),
            "\\PC{0,12}".prop_map(toml::Value::String),
            proptest::sample::select(words.to_vec()).prop_map(|s| toml::Value::String(s.into())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    /// A valid base spec with `entries` set on top of it.
    fn document(entries: Vec<(String, toml::Value)>) -> toml::Table {
        let mut doc = toml::Table::new();
        doc.insert("name".into(), "prop".into());
        doc.insert("dataset".into(), "sklearn:iris".into());
        for (key, value) in entries {
            match key.split_once('.') {
                Some((section, inner)) => {
                    let table = doc
                        .entry(section)
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(table) = table {
                        table.insert(inner.into(), value);
                    }
                }
                None => {
                    doc.insert(key, value);
                }
            }
        }
        doc
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_spec_decodes_or_names_the_key_it_refuses(
            entries in proptest::collection::vec((key(), value()), 0..6)
        ) {
            let Ok(text) = toml::to_string(&document(entries)) else {
                return Ok(()); // not expressible as TOML
            };
            match RunSpec::from_toml_str(&text, std::path::Path::new("/nonexistent")) {
                Ok(spec) => {
                    prop_assert!(spec.validate().is_ok());
                    let stored = serde_json::to_value(&spec).unwrap();
                    let back: RunSpec = serde_json::from_value(stored).unwrap();
                    prop_assert_eq!(back, spec);
                }
                Err(err) => {
                    let key = err.details.get("key").and_then(|k| k.as_str());
                    prop_assert!(key.is_some_and(|k| !k.is_empty() && err.message.contains(k)),
                        "{text}\n=> {err}");
                }
            }
        }
    }
}
