//! Datasets and trainers end to end through the CLI (`cerebros-bridge run SPEC --json`) on
//! the real service ops (the `nas_fixture` module without its knobs): the synthetic
//! datasets.

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
