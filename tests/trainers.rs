//! Datasets and trainers end to end through the CLI (`cerebros-bridge run SPEC --json`) on
//! the real service ops (the `nas_fixture` module without its knobs): the synthetic
//! datasets, the Keras trainer and its missing-dependency error, the numpy default.

mod common;

use serde_json::Value;
use std::path::PathBuf;

/// A scratch folder with its own store.
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

    /// Writes `spec` and runs it: (exit code, the JSON document, stderr).
    fn run(&self, spec: &str, envs: &[(&str, &str)]) -> (i32, Value, String) {
        let spec_path = self.path("spec.toml");
        std::fs::write(&spec_path, spec).unwrap();
        let mut command = common::nas_cli(
            &self.path("store.db"),
            &["run", spec_path.to_str().unwrap(), "--json"],
        );
        for (key, value) in envs {
            command.env(key, value);
        }
        Scratch::outcome(command)
    }

    /// Runs the CLI with `args` on this scratch's store.
    fn cli(&self, args: &[&str]) -> (i32, Value, String) {
        Scratch::outcome(common::nas_cli(&self.path("store.db"), args))
    }

    fn outcome(mut command: std::process::Command) -> (i32, Value, String) {
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (
            output.status.code().unwrap_or(-1),
            serde_json::from_str(&stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// A spec of 2 small trials on `dataset`, with extra top-level `head` lines and
/// `[dataset_options]` lines `options`.
fn spec(head: &str, dataset: &str, options: &str) -> String {
    format!(
        r#"
name = "trainers-test"
dataset = "{dataset}"
seed = 5
{head}
[dataset_options]
{options}
[search_space]
maximum_levels = 2
maximum_units_per_level = 2
minimum_neurons_per_unit = 4
maximum_neurons_per_unit = 16
[budget]
trials = 2
epochs = 4
batch_size = 32
parallelism = 2
trial_timeout_ms = 120000
"#
    )
}

#[test]
fn a_run_on_a_synthetic_dataset_trains_on_the_generated_rows() {
    let scratch = Scratch::new();
    let options = "samples = 400\nfeatures = 12\ninformative = 4\nclasses = 3\nnoise = 0.05";
    let (code, doc, stderr) = scratch.run(&spec("", "synthetic:classification", options), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["status"], "succeeded", "{doc}");
    let trials = doc["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    for trial in trials {
        assert_eq!(trial["status"], "succeeded", "{trial}");
        // Three classes: better than chance after a few epochs.
        assert!(
            trial["metrics"]["val_accuracy"].as_f64().unwrap() > 0.4,
            "{trial}"
        );
    }
}

/// The Keras trainer on iris: 2 trials of 3 epochs (Keras compiles each new model, which
/// dominates the time).
fn keras_spec() -> String {
    spec("trainer = \"keras\"", "sklearn:iris", "").replace("epochs = 4", "epochs = 3")
}

/// Loads each `.keras` artifact named on the command line with `keras.saving.load_model`
/// alone and prints its accuracy on the raw rows of the run's validation split (iris, run
/// seed 5), one line each.
const LOAD_AND_SCORE: &str = r#"
import os, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import keras, numpy as np
sys.path.insert(0, "python")
from cerebros_service.nas.datasets import load_dataset
data = load_dataset("sklearn:iris", {}, 5)
raw = data.x_val.astype(np.float64) * data.x_std + data.x_mean
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    print(float(np.mean(model.predict(raw, verbose=0).argmax(axis=1) == data.y_val)))
"#;

#[test]
fn a_keras_run_trains_every_trial_and_saves_loadable_keras_models() {
    let scratch = Scratch::new();
    let (code, doc, stderr) = scratch.run(&keras_spec(), &[]);
    if !keras_supported() {
        // requirements-dev.txt installs keras on Python >= 3.11 only (its own floor): on
        // an older venv (`make test-pythons`) the run is refused up front.
        assert_eq!(code, 3, "{doc} {stderr}");
        assert_eq!(doc["error"]["class"], "dependency", "{doc}");
        return;
    }
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["status"], "succeeded", "{doc}");
    let trials = doc["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    let mut paths = Vec::new();
    for trial in trials {
        assert_eq!(trial["status"], "succeeded", "{trial}");
        assert_eq!(trial["parameters"]["trainer"], "keras", "{trial}");
        let uri = trial["artifact_uri"].as_str().unwrap();
        assert!(uri.ends_with(".keras"), "{uri}");
        paths.push(uri.trim_start_matches("file://").to_owned());
    }
    let output = std::process::Command::new(common::venv_python())
        .arg("-c")
        .arg(LOAD_AND_SCORE)
        .args(&paths)
        .current_dir(common::root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (trial, line) in trials.iter().zip(stdout.lines()) {
        let accuracy: f64 = line.trim().parse().unwrap();
        let reported = trial["metrics"]["val_accuracy"].as_f64().unwrap();
        assert!(
            (accuracy - reported).abs() <= 0.04,
            "{accuracy} vs {reported}"
        );
    }
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}

/// Whether the venv's Python is one keras supports (>= 3.11, as requirements-dev.txt says).
fn keras_supported() -> bool {
    let output = std::process::Command::new(common::venv_python())
        .args(["-c", "import sys; print(sys.version_info >= (3, 11))"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "True"
}

#[test]
fn keras_requested_but_not_importable_is_refused_before_any_trial() {
    let scratch = Scratch::new();
    // The service folder (first on sys.path) holds a keras package whose import fails, as
    // a missing keras does, and a module serving the fixture's ops.
    let shadow = scratch.path("shadow");
    std::fs::create_dir_all(shadow.join("keras")).unwrap();
    std::fs::write(
        shadow.join("keras/__init__.py"),
        "raise ImportError('keras is shadowed by the test')\n",
    )
    .unwrap();
    std::fs::write(shadow.join("no_keras_service.py"), NO_KERAS_SERVICE).unwrap();
    let fixtures = common::root().join("tests/fixtures");
    let (code, doc, stderr) = scratch.run(
        &keras_spec(),
        &[
            ("CEREBROS_REPO", shadow.to_str().unwrap()),
            ("CEREBROS_MODULE", "no_keras_service"),
            ("NO_KERAS_FIXTURES", fixtures.to_str().unwrap()),
        ],
    );
    // start_run refuses it: the CLI exits 3 (dependency) with the service's error, and
    // the run is stored as failed without a trial.
    assert_eq!(code, 3, "{doc} {stderr}");
    assert_eq!(doc["error"]["class"], "dependency", "{doc}");
    assert_eq!(doc["error"]["details"]["key"], "trainer", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("pip install cerebros_service[keras]"),
        "{message}"
    );
    let run_id = doc["error"]["run_id"].as_str().expect("the run's id");
    let (code, shown, _) = scratch.cli(&["runs", "show", run_id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(shown["run"]["status"], "failed", "{shown}");
    assert_eq!(shown["trials"], serde_json::json!([]), "{shown}");
    let error = shown["run"]["error"].as_str().unwrap();
    assert!(error.starts_with("dependency: trainer: "), "{error}");
}

/// The fixture's ops, served from a folder whose `keras` cannot be imported.
const NO_KERAS_SERVICE: &str = r#"
import os, sys
sys.path.append(os.environ["NO_KERAS_FIXTURES"])
from nas_fixture import finalize_run, health, record_trial, run_trial, start_run
__bridge_ops__ = ["health", "start_run", "run_trial", "record_trial", "finalize_run"]
"#;

#[test]
fn the_trainer_stays_numpy_by_default() {
    let scratch = Scratch::new();
    let (code, doc, stderr) = scratch.run(&spec("", "sklearn:iris", ""), &[]);
    assert_eq!(code, 0, "{stderr}");
    for trial in doc["trials"].as_array().unwrap() {
        assert_eq!(trial["parameters"]["trainer"], "numpy", "{trial}");
        assert!(trial["artifact_uri"].as_str().unwrap().ends_with(".npz"));
    }
}

#[test]
fn bad_synthetic_options_are_refused_naming_the_key() {
    let scratch = Scratch::new();
    let options = "features = 4\ninformative = 5";
    let (code, doc, _) = scratch.run(&spec("", "synthetic:classification", options), &[]);
    assert_eq!(code, 2);
    assert_eq!(doc["error"]["class"], "contract");
    assert_eq!(
        doc["error"]["details"]["key"], "dataset_options.informative",
        "{doc}"
    );
}
