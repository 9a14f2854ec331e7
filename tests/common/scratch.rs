//! A scratch folder for NAS runs through the CLI with MLflow sync: an iris spec and a
//! store of its own (MLflow's default database goes beside the store), and what each
//! command did.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A scratch folder with `spec.toml` and its own store (`store.db`).
pub struct Scratch {
    /// The folder (removed when dropped).
    pub dir: tempfile::TempDir,
}

/// What one CLI command did.
pub struct Outcome {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Its stdout as JSON (`null` when it is not JSON).
    pub json: Value,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Outcome {
    /// What `output` says.
    pub fn of(output: Output) -> Outcome {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        Outcome {
            code: output.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Scratch {
    /// A scratch folder whose spec is [`super::iris_spec`]`(name, trials, epochs)`.
    pub fn new(name: &str, trials: u32, epochs: u32) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("spec.toml"),
            super::iris_spec(name, trials, epochs),
        )
        .unwrap();
        Scratch { dir }
    }

    /// A file of the scratch folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The spec's path, as an argument.
    pub fn spec(&self) -> String {
        self.path("spec.toml").display().to_string()
    }

    /// The CLI on this scratch's store, syncing to `tracking_uri` (`None`: the default
    /// database beside the store), without inherited fixture, log or config settings;
    /// each trial of the fixture takes 0.5 s.
    pub fn command(&self, args: &[&str], tracking_uri: Option<&str>) -> Command {
        let mut command = super::nas_cli(&self.path("store.db"), args);
        command
            .env_remove("NAS_FIXTURE_FAIL_INDEX")
            .env_remove("NAS_FIXTURE_LOG")
            .env_remove("RUST_LOG")
            .env_remove("CEREBROS_CONFIG")
            .env_remove("MLFLOW_HTTP_REQUEST_TIMEOUT")
            .env("NAS_FIXTURE_SLEEP", "0.5")
            .stdin(Stdio::null());
        match tracking_uri {
            Some(uri) => command.env("MLFLOW_TRACKING_URI", uri),
            None => command.env_remove("MLFLOW_TRACKING_URI"),
        };
        command
    }

    /// Runs [`command`](Scratch::command) to its end.
    pub fn cli(&self, args: &[&str], tracking_uri: Option<&str>) -> Outcome {
        Outcome::of(self.command(args, tracking_uri).output().unwrap())
    }
}
