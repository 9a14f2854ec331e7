//! Run specs (DESIGN §4): a TOML file describing one NAS run, validated before anything
//! starts, with errors that name the offending key.

use crate::bounded_read;
use crate::contracts::RunStartedV1;
use crate::error::{BridgeError, ErrorClass, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The search-space keys the service understands.
pub const SEARCH_SPACE_KEYS: [&str; 11] = [
    "minimum_levels",
    "maximum_levels",
    "minimum_units_per_level",
    "maximum_units_per_level",
    "minimum_neurons_per_unit",
    "maximum_neurons_per_unit",
    "p_lateral_connection",
    "p_predecessor_connection",
    "activation",
    "learning_rate",
    "output_activation",
];

/// The longest run spec read (a spec is a few hundred bytes).
const MAX_SPEC_FILE_BYTES: usize = 1024 * 1024;

/// The longest CSV header line read when checking a dataset's target column.
const MAX_CSV_HEADER_BYTES: u64 = 1024 * 1024;

/// The objectives a run can optimise.
pub const OBJECTIVES: [&str; 3] = ["val_accuracy", "val_loss", "val_rmse"];

/// Whether a larger or a smaller objective is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (accuracy).
    Maximize,
    /// Smaller is better (loss, RMSE).
    Minimize,
}

impl Direction {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        }
    }

    /// Whether `candidate` beats `best`.
    pub fn better(self, candidate: f64, best: f64) -> bool {
        match self {
            Direction::Maximize => candidate > best,
            Direction::Minimize => candidate < best,
        }
    }
}

/// How much a run may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Trials (architectures) to train.
    pub trials: u32,
    /// Maximum epochs per trial.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// Epochs without improvement before a trial stops early.
    pub patience: u32,
    /// Deadline of one trial.
    pub trial_timeout_ms: u64,
    /// Trials trained at once.
    pub parallelism: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            trials: 16,
            epochs: 10,
            batch_size: 64,
            patience: 3,
            trial_timeout_ms: 60_000,
            parallelism: 2,
        }
    }
}

/// A validated run spec.
///
/// ```
/// use cerebros_bridge::spec::RunSpec;
/// let spec = RunSpec::from_toml_str(r#"
///     name = "iris"
///     dataset = "sklearn:iris"
///     [budget]
///     trials = 4
/// "#, std::path::Path::new(".")).unwrap();
/// assert_eq!(spec.budget.trials, 4);
/// assert_eq!(spec.objective, "val_accuracy");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// A human name for the run.
    pub name: String,
    /// `sklearn:NAME`, `csv:PATH` or `npz:PATH` (paths relative to the spec file).
    pub dataset: String,
    /// What to optimise.
    #[serde(default = "default_objective")]
    pub objective: String,
    /// Whether larger or smaller is better.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// Seeds the split and every trial.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `validation_split`, `target`, … (passed to the service).
    #[serde(default)]
    pub dataset_options: Map<String, Value>,
    /// The search space (DESIGN §4).
    #[serde(default)]
    pub search_space: Map<String, Value>,
    /// The budget.
    #[serde(default)]
    pub budget: Budget,
}

fn default_objective() -> String {
    "val_accuracy".into()
}

fn default_direction() -> Direction {
    Direction::Maximize
}

fn default_seed() -> u64 {
    42
}

impl RunSpec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<RunSpec> {
        let text = bounded_read::read_text(path, MAX_SPEC_FILE_BYTES)
            .map_err(|e| spec_error(format!("cannot read run spec {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        RunSpec::from_toml_str(&text, base).map_err(|mut e| {
            e.message = format!("{}: {}", path.display(), e.message);
            e
        })
    }

    /// Parses and validates spec text; relative dataset paths resolve against `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<RunSpec> {
        let mut spec: RunSpec = toml::from_str(text).map_err(|e| {
            spec_error(format!("invalid run spec: {}", e.message()))
                .with_detail("line", line_of(text, e.span()))
        })?;
        spec.resolve_dataset_path(base);
        spec.validate()?;
        Ok(spec)
    }

    fn resolve_dataset_path(&mut self, base: &Path) {
        for prefix in ["csv:", "npz:"] {
            if let Some(path) = self.dataset.strip_prefix(prefix) {
                let path = Path::new(path);
                if path.is_relative() {
                    self.dataset = format!("{prefix}{}", base.join(path).display());
                }
            }
        }
    }

    /// Checks every rule that can be checked without Python.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(key_error("name", "must not be empty"));
        }
        self.validate_budget()?;
        if !OBJECTIVES.contains(&self.objective.as_str()) {
            return Err(key_error(
                "objective",
                &format!(
                    "{:?} is not one of {}",
                    self.objective,
                    OBJECTIVES.join(", ")
                ),
            ));
        }
        self.validate_search_space()?;
        self.validate_dataset()
    }

    fn validate_budget(&self) -> Result<()> {
        let b = &self.budget;
        let positive = [
            ("budget.trials", b.trials as u64),
            ("budget.epochs", b.epochs as u64),
            ("budget.batch_size", b.batch_size as u64),
            ("budget.trial_timeout_ms", b.trial_timeout_ms),
            ("budget.parallelism", b.parallelism as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(key_error(key, "must be at least 1"));
            }
        }
        if b.trials > 100_000 {
            return Err(key_error("budget.trials", "must be at most 100000"));
        }
        Ok(())
    }

    fn validate_search_space(&self) -> Result<()> {
        let space = &self.search_space;
        if let Some(unknown) = space
            .keys()
            .find(|k| !SEARCH_SPACE_KEYS.contains(&k.as_str()))
        {
            return Err(key_error(
                &format!("search_space.{unknown}"),
                &format!(
                    "is not a search-space key; expected one of {}",
                    SEARCH_SPACE_KEYS.join(", ")
                ),
            ));
        }
        for (low, high) in [
            ("minimum_levels", "maximum_levels"),
            ("minimum_units_per_level", "maximum_units_per_level"),
            ("minimum_neurons_per_unit", "maximum_neurons_per_unit"),
        ] {
            let (Some(lo), Some(hi)) = (space.get(low), space.get(high)) else {
                continue;
            };
            let (Some(lo), Some(hi)) = (lo.as_f64(), hi.as_f64()) else {
                return Err(key_error(
                    &format!("search_space.{low}"),
                    "must be a number",
                ));
            };
            if lo > hi {
                return Err(key_error(
                    &format!("search_space.{low}"),
                    &format!("= {lo} is above search_space.{high} = {hi}"),
                ));
            }
        }
        if let Some(lr) = space.get("learning_rate") {
            let pair = lr.as_array().filter(|a| a.len() == 2);
            let bounds: Option<Vec<f64>> = pair.and_then(|a| a.iter().map(Value::as_f64).collect());
            match bounds.as_deref() {
                Some([lo, hi]) if *lo > 0.0 && lo <= hi => {}
                _ => {
                    return Err(key_error(
                        "search_space.learning_rate",
                        "must be [low, high] with 0 < low <= high",
                    ))
                }
            }
        }
        Ok(())
    }

    fn validate_dataset(&self) -> Result<()> {
        let (kind, rest) = self
            .dataset
            .split_once(':')
            .ok_or_else(|| key_error("dataset", "must be sklearn:NAME, csv:PATH or npz:PATH"))?;
        match kind {
            "sklearn" => Ok(()),
            "csv" | "npz" => {
                let path = Path::new(rest);
                if !path.is_file() {
                    return Err(key_error(
                        "dataset",
                        &format!("file {} does not exist", path.display()),
                    ));
                }
                if kind == "csv" {
                    self.check_csv_target(path)?;
                }
                Ok(())
            }
            other => Err(key_error(
                "dataset",
                &format!("unknown source {other:?}: expected sklearn, csv or npz"),
            )),
        }
    }

    fn check_csv_target(&self, path: &Path) -> Result<()> {
        use std::io::BufRead;
        let file = std::fs::File::open(path)
            .map_err(|e| key_error("dataset", &format!("cannot open {}: {e}", path.display())))?;
        let mut header = String::new();
        std::io::BufReader::new(std::io::Read::take(file, MAX_CSV_HEADER_BYTES))
            .read_line(&mut header)
            .map_err(|e| key_error("dataset", &format!("cannot read {}: {e}", path.display())))?;
        let target = self
            .dataset_options
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or("target");
        let columns: Vec<&str> = header
            .trim_end()
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        if !columns.contains(&target) {
            return Err(key_error(
                "dataset_options.target",
                &format!(
                    "column {target:?} is not in the header of {} (columns: {})",
                    path.display(),
                    columns.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The run's dataset path when it is a file, for the store's records.
    pub fn dataset_file(&self) -> Option<PathBuf> {
        ["csv:", "npz:"]
            .iter()
            .find_map(|p| self.dataset.strip_prefix(p))
            .map(PathBuf::from)
    }

    /// The `start_run` contract of this spec.
    pub fn run_started(&self, run_id: &str, timestamp: &str, artifact_dir: &Path) -> RunStartedV1 {
        let mut contract = RunStartedV1::new(run_id, timestamp);
        contract.dataset_id = Some(self.dataset.clone());
        contract.search_space = self.search_space.clone();
        contract.objective = self.objective.clone();
        contract.budget = budget_map(&self.budget);
        contract.parameters = self.trial_parameters(artifact_dir);
        contract.correlation_id = Some(run_id.to_owned());
        contract
    }

    /// The `parameters` passed with every trial.
    pub fn trial_parameters(&self, artifact_dir: &Path) -> Map<String, Value> {
        let mut parameters = Map::new();
        parameters.insert("name".into(), self.name.clone().into());
        parameters.insert("objective".into(), self.objective.clone().into());
        parameters.insert("direction".into(), self.direction.as_str().into());
        parameters.insert(
            "dataset_options".into(),
            Value::Object(self.dataset_options.clone()),
        );
        parameters.insert("seed".into(), self.seed.into());
        parameters.insert("run_seed".into(), self.seed.into());
        parameters.insert(
            "artifact_dir".into(),
            artifact_dir.display().to_string().into(),
        );
        parameters
    }
}

/// The budget as the JSON object the contracts carry.
pub fn budget_map(budget: &Budget) -> Map<String, Value> {
    match serde_json::to_value(budget) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The seed of trial `index` of a run seeded with `run_seed` (SplitMix64: distinct,
/// well-mixed, and the same on every machine).
pub fn trial_seed(run_seed: u64, index: u32) -> u64 {
    let mut z = run_seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & ((1 << 53) - 1)
}

fn spec_error(message: String) -> BridgeError {
    BridgeError::new(ErrorClass::Contract, message)
}

fn key_error(key: &str, problem: &str) -> BridgeError {
    spec_error(format!("{key} {problem}")).with_detail("key", key)
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Value {
    span.map(|s| Value::from(text[..s.start.min(text.len())].lines().count().max(1)))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunSpec> {
        RunSpec::from_toml_str(text, Path::new("."))
    }

    const BASE: &str = "name = \"t\"\ndataset = \"sklearn:iris\"\n";

    #[test]
    fn the_examples_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["examples/digits.toml", "examples/diabetes.toml"] {
            RunSpec::load(&root.join(name)).unwrap();
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (format!("{BASE}colour = 1\n"), "colour"),
            (format!("{BASE}[budget]\ntrials = 0\n"), "budget.trials"),
            (format!("{BASE}[budget]\nepochz = 3\n"), "epochz"),
            (
                format!("{BASE}[search_space]\nminimum_levels = 3\nmaximum_levels = 1\n"),
                "search_space.minimum_levels",
            ),
            (
                format!("{BASE}[search_space]\nlevels = 3\n"),
                "search_space.levels",
            ),
            (
                format!("{BASE}[search_space]\nlearning_rate = [0.1, 0.01]\n"),
                "search_space.learning_rate",
            ),
            (format!("{BASE}objective = \"auc\"\n"), "objective"),
            (
                "name = \"t\"\ndataset = \"csv:/nonexistent/x.csv\"\n".to_string(),
                "dataset",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.class, ErrorClass::Contract);
            assert!(err.message.contains(key), "{key}: {}", err.message);
        }
    }

    #[test]
    fn a_csv_without_the_target_column_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.csv"), "a,b,label\n1,2,0\n").unwrap();
        let text = "name = \"t\"\ndataset = \"csv:d.csv\"\n";
        let err = RunSpec::from_toml_str(text, dir.path()).unwrap_err();
        assert!(
            err.message.contains("dataset_options.target"),
            "{}",
            err.message
        );
        let ok = format!("{text}[dataset_options]\ntarget = \"label\"\n");
        let spec = RunSpec::from_toml_str(&ok, dir.path()).unwrap();
        assert!(spec.dataset.starts_with("csv:/"));
    }

    #[test]
    fn trial_seeds_are_distinct_and_stable() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|i| trial_seed(42, i)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_eq!(trial_seed(42, 0), trial_seed(42, 0));
        assert!(seeds.iter().all(|s| *s < (1 << 53)));
    }
}
