//! Run specs (DESIGN §4): a TOML file describing one NAS run, validated before anything
//! starts, with errors that name the offending key. The checked values of the search
//! space, the budget and the dataset options come from one table shared with the
//! service ([`rules`](mod@rules)).

pub mod rules;
mod synthetic;

use crate::core::bounded_read;
use crate::core::contracts::RunStartedV1;
use crate::core::error::{BridgeError, ErrorClass, Result};
use rules::{check_section, key_error, rules, shown, Section};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

/// The longest run spec read (a spec is a few hundred bytes).
const MAX_SPEC_FILE_BYTES: usize = 1024 * 1024;

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
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::Maximize, Direction::Minimize];

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
    /// Wall-clock budget of a run in seconds (0: none): no trial starts once it is spent,
    /// trials already running finish. Counted from the end of `start_run` (the dataset is
    /// loaded) in each drive: a resumed run gets it again.
    pub max_seconds: u64,
    /// CPUs one trial asks of the `ray` executor (fractions allowed; DESIGN §12).
    pub trial_cpus: f64,
    /// GPUs one trial asks of the `ray` executor.
    pub trial_gpus: f64,
    /// Memory one trial asks of the `ray` executor, in MiB; `None`: none reserved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_memory_mb: Option<u64>,
}

impl Default for Budget {
    /// The defaults of the shared table ([`rules`](mod@rules)).
    fn default() -> Self {
        let default = |key| rules().budget_default(key);
        Budget {
            trials: default("trials") as u32,
            epochs: default("epochs") as u32,
            batch_size: default("batch_size") as u32,
            patience: default("patience") as u32,
            trial_timeout_ms: default("trial_timeout_ms"),
            parallelism: default("parallelism") as u32,
            max_seconds: default("max_seconds"),
            trial_cpus: default("trial_cpus") as f64,
            trial_gpus: default("trial_gpus") as f64,
            trial_memory_mb: None,
        }
    }
}

/// How trials are chosen and stopped (`[search]`, DESIGN §13): the strategy (`random`,
/// `tpe`, `cmaes`) and the pruner (`none`, `median`, `asha`), names checked by the shared
/// table ([`rules`](mod@rules)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Search {
    /// Where each trial's architecture comes from.
    pub strategy: String,
    /// What stops a hopeless trial early.
    pub pruner: String,
}

impl Default for Search {
    /// The defaults of the shared table: `random`, `none` (today's behaviour).
    fn default() -> Self {
        Search {
            strategy: rules().search_default("strategy"),
            pruner: rules().search_default("pruner"),
        }
    }
}

impl Search {
    /// Whether the strategy is `random` and there is no pruner: trials need no history.
    pub fn is_default(&self) -> bool {
        *self == Search::default()
    }

    /// Whether a trial needs the sampled architectures of the run's other trials.
    pub fn needs_architectures(&self) -> bool {
        self.strategy != Search::default().strategy
    }

    /// Whether a trial needs the per-epoch curves of the run's other trials.
    pub fn needs_curves(&self) -> bool {
        self.pruner != Search::default().pruner
    }
}

/// A validated run spec.
///
/// ```
/// use cerebros_bridge::nas::spec::RunSpec;
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
    /// `sklearn:NAME`, `synthetic:NAME`, `csv:PATH` or `npz:PATH` (paths relative to the
    /// spec file).
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
    /// The search strategy and pruner (absent from a stored spec when both are defaults,
    /// so a spec written before they existed reads and writes the same).
    #[serde(default, skip_serializing_if = "Search::is_default")]
    pub search: Search,
    /// Which trainer trains the trials: `numpy` (the default) or `keras`.
    #[serde(default = "default_trainer")]
    pub trainer: String,
}

fn default_trainer() -> String {
    rules()
        .trainer
        .default
        .as_ref()
        .and_then(Value::as_str)
        .expect("spec_rules.json: trainer has a string default")
        .to_owned()
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

/// How a spec's text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecSyntax {
    /// TOML, as in a spec file.
    Toml,
    /// A JSON object of the same keys.
    Json,
}

impl SpecSyntax {
    /// The spec's keys and values as a JSON object; a syntax error names its line.
    fn document(self, text: &str) -> Result<Map<String, Value>> {
        match self {
            SpecSyntax::Toml => {
                let table: toml::Table =
                    toml::from_str(text).map_err(|e| toml_syntax_error(text, e))?;
                json_table(table, "")
            }
            SpecSyntax::Json => {
                let value: Value = serde_json::from_str(text).map_err(|e| {
                    spec_error(format!("invalid run spec: {e}"))
                        .with_detail("line", e.line())
                        .with_source(e)
                })?;
                match value {
                    Value::Object(document) => Ok(document),
                    _ => Err(spec_error(
                        "invalid run spec: expected a JSON object of the spec's keys".to_owned(),
                    )),
                }
            }
        }
    }
}

impl RunSpec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<RunSpec> {
        let text = bounded_read::read_text_now(path, MAX_SPEC_FILE_BYTES).map_err(|e| {
            spec_error(format!("cannot read run spec {}: {e}", path.display())).with_source(e)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        RunSpec::from_toml_str(&text, base).map_err(|mut e| {
            e.message = format!("{}: {}", path.display(), e.message);
            e
        })
    }

    /// Parses and validates spec text; relative dataset paths resolve against `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<RunSpec> {
        RunSpec::from_document(SpecSyntax::Toml.document(text)?, base, false)
    }

    /// Parses and validates a spec given as a JSON object (the same keys and rules as
    /// the TOML file); relative dataset paths resolve against `base`.
    pub fn from_json_str(text: &str, base: &Path) -> Result<RunSpec> {
        RunSpec::from_document(SpecSyntax::Json.document(text)?, base, false)
    }

    /// Parses and validates a spec that a client sent to a server: the same rules, and
    /// a `csv:`/`npz:` dataset must be a file inside `root` (relative paths resolve
    /// against it), so that a client cannot make the server read any file it can. A
    /// file outside and a missing file get the same answer: the error tells nothing of
    /// the server's other files.
    pub fn from_client(text: &str, syntax: SpecSyntax, root: &Path) -> Result<RunSpec> {
        RunSpec::from_document(syntax.document(text)?, root, true)
    }

    /// The one validation path of a spec's keys and values, whatever its syntax.
    fn from_document(document: Map<String, Value>, base: &Path, confined: bool) -> Result<RunSpec> {
        let document = check_document(document)?;
        let mut spec: RunSpec = serde_json::from_value(Value::Object(document))
            .map_err(|e| spec_error(format!("invalid run spec: {e}")).with_source(e))?;
        spec.resolve_dataset_path(base);
        if confined {
            spec.check_dataset_inside(base)?;
        }
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
        check_name(&self.name)?;
        check_section(Section::Budget, &budget_map(&self.budget))?;
        if let Ok(Value::Object(search)) = serde_json::to_value(&self.search) {
            check_section(Section::Search, &search)?;
        }
        let objectives = &rules().objectives;
        if !objectives.contains_key(&self.objective) {
            let known: Vec<&str> = objectives.keys().map(String::as_str).collect();
            return Err(key_error(
                "objective",
                &format!("{:?} is not one of {}", self.objective, known.join(", ")),
            ));
        }
        check_section(Section::SearchSpace, &self.search_space)?;
        check_section(Section::DatasetOptions, &self.dataset_options)?;
        self.validate_dataset()
    }

    fn validate_dataset(&self) -> Result<()> {
        let (kind, rest) = self.dataset.split_once(':').ok_or_else(|| {
            key_error(
                "dataset",
                "must be sklearn:NAME, synthetic:NAME, csv:PATH or npz:PATH",
            )
        })?;
        let option = |key: &str| self.dataset_options.get(key).and_then(Value::as_str);
        if kind != "csv" && option("target").is_some() {
            return Err(key_error(
                "dataset_options.target",
                "applies to csv datasets only",
            ));
        }
        if kind != "synthetic" {
            if let Some(key) = self
                .dataset_options
                .keys()
                .find(|k| synthetic::is_synthetic_option(k))
            {
                return Err(key_error(
                    &format!("dataset_options.{key}"),
                    "applies to synthetic datasets only",
                ));
            }
        }
        let task = match kind {
            "sklearn" => {
                let tasks = &rules().sklearn_datasets;
                let Some(task) = tasks.get(rest) else {
                    let known: Vec<&str> = tasks.keys().map(String::as_str).collect();
                    return Err(key_error(
                        "dataset",
                        &format!(
                            "unknown scikit-learn dataset {rest:?} (known: {})",
                            known.join(", ")
                        ),
                    ));
                };
                if let Some(asked) = option("task").filter(|asked| asked != task) {
                    return Err(key_error(
                        "dataset_options.task",
                        &format!("sklearn:{rest} is a {task} dataset, not {asked}"),
                    ));
                }
                task.as_str()
            }
            "synthetic" => synthetic::check(rest, &self.dataset_options)?,
            "csv" | "npz" => {
                let path = Path::new(rest);
                check_regular_file(path)?;
                if kind == "csv" {
                    self.check_csv_target(path)?;
                }
                return Ok(());
            }
            other => {
                return Err(key_error(
                    "dataset",
                    &format!("unknown source {other:?}: expected sklearn, synthetic, csv or npz"),
                ))
            }
        };
        let needs = rules()
            .objectives
            .get(&self.objective)
            .and_then(|o| o.task.as_deref());
        match needs {
            Some(needs) if needs != task => Err(key_error(
                "objective",
                &format!(
                    "{} needs a {needs} dataset, but {} is a {task} dataset",
                    self.objective, self.dataset
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_csv_target(&self, path: &Path) -> Result<()> {
        use std::io::{BufRead, Read};
        let file = std::fs::File::open(path).map_err(|e| {
            key_error("dataset", &format!("cannot open {}: {e}", path.display())).with_source(e)
        })?;
        let mut header = Vec::new();
        std::io::BufReader::new(file.take(MAX_HEADER_BYTES + 1))
            .read_until(b'\n', &mut header)
            .map_err(|e| {
                key_error("dataset", &format!("cannot read {}: {e}", path.display())).with_source(e)
            })?;
        if header.len() as u64 > MAX_HEADER_BYTES {
            return Err(key_error(
                "dataset",
                &format!(
                    "the header row of {} is longer than {MAX_HEADER_BYTES} bytes",
                    path.display()
                ),
            ));
        }
        let header = String::from_utf8_lossy(&header);
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

    /// Refuses a `csv:`/`npz:` dataset whose file does not resolve (symlinks included)
    /// inside `root`.
    /// A client's dataset file must be a data file of its kind (`.csv`, `.npz`) inside
    /// `root`, with no hidden part in its path, before and after links are followed: the
    /// loaders' errors quote what they read, so any other file there (a `.env`, the store,
    /// credentials) must never be opened. Every refusal gives the same answer, so it tells
    /// nothing about which files exist.
    fn check_dataset_inside(&self, root: &Path) -> Result<()> {
        let Some((kind, file)) = self.dataset_kind_and_file() else {
            return Ok(());
        };
        let acceptable = |path: &Path, root: &Path| {
            path.strip_prefix(root).is_ok_and(|relative| {
                let visible = relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(part) if !part.to_string_lossy().starts_with('.')));
                let extension = relative.extension().and_then(|e| e.to_str());
                visible && extension.is_some_and(|e| e.eq_ignore_ascii_case(kind))
            })
        };
        let allowed = acceptable(&file, root)
            && match (file.canonicalize(), root.canonicalize()) {
                (Ok(file), Ok(root)) => acceptable(&file, &root),
                _ => false,
            };
        if allowed {
            return Ok(());
        }
        Err(key_error(
            "dataset",
            &format!(
                "must be a .{kind} file inside {} (the server's folder) with no part of its \
                 path starting with '.'",
                root.display()
            ),
        ))
    }

    /// The run's dataset path when it is a file, for the store's records.
    pub fn dataset_file(&self) -> Option<PathBuf> {
        self.dataset_kind_and_file().map(|(_, file)| file)
    }

    /// The kind (`csv`, `npz`) and path of the run's dataset when it is a file.
    fn dataset_kind_and_file(&self) -> Option<(&'static str, PathBuf)> {
        ["csv", "npz"].into_iter().find_map(|kind| {
            let path = self.dataset.strip_prefix(kind)?.strip_prefix(':')?;
            Some((kind, PathBuf::from(path)))
        })
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
        if !self.search.is_default() {
            parameters.insert(
                "search".into(),
                serde_json::to_value(&self.search).unwrap_or_default(),
            );
        }
        parameters.insert("trainer".into(), self.trainer.clone().into());
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

/// The longest CSV header row read to find the target column.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The top-level keys of a spec.
const TOP_LEVEL_KEYS: [&str; 10] = [
    "name",
    "dataset",
    "objective",
    "direction",
    "seed",
    "dataset_options",
    "search_space",
    "budget",
    "search",
    "trainer",
];

/// Checks the keys and value kinds of a parsed spec document, naming the key of the
/// first problem, and normalises its sections by the shared table ([`rules`]).
fn check_document(mut document: Map<String, Value>) -> Result<Map<String, Value>> {
    if let Some(unknown) = document
        .keys()
        .find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str()))
    {
        return Err(key_error(
            unknown,
            &format!(
                "is not a run spec key; expected one of {}",
                TOP_LEVEL_KEYS.join(", ")
            ),
        ));
    }
    for key in ["name", "dataset"] {
        if !document.contains_key(key) {
            return Err(key_error(key, "is required"));
        }
    }
    for key in ["name", "dataset", "objective"] {
        if let Some(value) = document.get(key).filter(|v| !v.is_string()) {
            return Err(key_error(
                key,
                &format!("must be a string, got {}", shown(value)),
            ));
        }
    }
    if let Some(value) = document.get("direction") {
        if !Direction::ALL
            .iter()
            .any(|d| value.as_str() == Some(d.as_str()))
        {
            return Err(key_error(
                "direction",
                &format!("must be maximize or minimize, got {}", shown(value)),
            ));
        }
    }
    if !document.contains_key("direction") {
        // The objective's natural direction (a loss is minimised).
        let objective = document
            .get("objective")
            .and_then(Value::as_str)
            .map_or_else(default_objective, str::to_owned);
        if let Some(rule) = rules().objectives.get(&objective) {
            document.insert("direction".into(), rule.direction.clone().into());
        }
    }
    if let Some(value) = document.get("trainer") {
        rules::check_value(&rules().trainer, value, "trainer")?;
    }
    if let Some(value) = document.get_mut("seed") {
        let seed = value.as_u64().or_else(|| {
            let x = value.as_f64()?;
            (x.fract() == 0.0 && (0.0..9.0e15).contains(&x)).then_some(x as u64)
        });
        let Some(seed) = seed else {
            return Err(key_error(
                "seed",
                &format!("must be a non-negative integer, got {}", shown(value)),
            ));
        };
        *value = Value::from(seed);
    }
    for section in [
        Section::SearchSpace,
        Section::Budget,
        Section::Search,
        Section::DatasetOptions,
    ] {
        let key = section.name();
        let Some(value) = document.get_mut(key) else {
            continue;
        };
        let Value::Object(table) = value else {
            return Err(key_error(
                key,
                &format!("must be a table, got {}", shown(value)),
            ));
        };
        *table = check_section(section, table)?;
    }
    Ok(document)
}

/// A TOML table as JSON; a non-finite float or a date is refused, naming its key (JSON,
/// the contracts and the store hold neither).
fn json_table(table: toml::Table, prefix: &str) -> Result<Map<String, Value>> {
    table
        .into_iter()
        .map(|(key, value)| {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            Ok((key, json_value(value, &path)?))
        })
        .collect()
}

fn json_value(value: toml::Value, key: &str) -> Result<Value> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(x) => serde_json::Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| key_error(key, &format!("must be a finite number, got {x}")))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => {
            return Err(key_error(
                key,
                &format!("must not be a date or time, got {d}"),
            ))
        }
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| json_value(item, key))
                .collect::<Result<_>>()?,
        ),
        toml::Value::Table(table) => Value::Object(json_table(table, key)?),
    })
}

/// A run's name is shown on terminals: not empty, and no control characters (escapes,
/// NUL, newlines).
/// The longest run name, in characters: it is the MLflow experiment's name (MLflow takes
/// 500 at most), a column of `runs list` and a title on the live page.
pub const MAX_NAME_CHARS: usize = 200;

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(key_error("name", "must not be empty"));
    }
    let length = name.chars().count();
    if length > MAX_NAME_CHARS {
        return Err(key_error(
            "name",
            &format!("must be at most {MAX_NAME_CHARS} characters, got {length}"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || is_invisible(*c)) {
        return Err(key_error(
            "name",
            &format!("must not hold control or invisible characters, got {:?}", c),
        ));
    }
    Ok(())
}

/// Whether `c` is an invisible formatting character (zero-width, bidirectional
/// controls, byte-order mark, …): in a name they make one run look like another, or
/// reorder what a terminal or the page shows around them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// A dataset file must be a regular file; says what the path is otherwise.
fn check_regular_file(path: &Path) -> Result<()> {
    let what = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(()),
        Ok(meta) if meta.is_dir() => "is a directory, not a regular file".to_owned(),
        Ok(meta) => format!(
            "is not a regular file (a {})",
            bounded_read::file_kind(&meta)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Err(key_error(
        "dataset",
        &format!("file {} {what}", path.display()),
    ))
}

fn spec_error(message: String) -> BridgeError {
    BridgeError::new(ErrorClass::Contract, message)
}

/// A spec's TOML syntax error: its line in the message and in `details.line`, and the
/// text it points at when short (the key of a duplicate key).
fn toml_syntax_error(text: &str, err: toml::de::Error) -> BridgeError {
    let span = err.span().filter(|s| text.get(s.clone()).is_some());
    let line = span
        .as_ref()
        .map(|s| text[..s.start].matches('\n').count() + 1);
    let near = span
        .and_then(|s| text.get(s))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 60 && !t.contains('\n'));
    let mut message = String::from("invalid run spec");
    if let Some(line) = line {
        message.push_str(&format!(" (line {line})"));
    }
    message.push_str(&format!(": {}", err.message().trim_end()));
    if let Some(near) = near {
        message.push_str(&format!(" at `{near}`"));
    }
    spec_error(message)
        .with_detail("line", line.map_or(Value::Null, Value::from))
        .with_source(err)
}

#[cfg(test)]
mod tests;
