//! Configuration (DESIGN §6): a [`Config`] read from `cerebros.toml` and overridden by
//! environment variables with the seed's names.
//!
//! Every error here is of class [`ErrorClass::Config`]; its message names the key, the
//! value, where the value came from and what the key accepts, and its `details` carry
//! `key` and `source`.

use crate::core::bounded_read;
use crate::core::error::{BridgeError, ErrorClass, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The config file looked for in the working directory when none is named.
pub const DEFAULT_FILE_NAME: &str = "cerebros.toml";

/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "CEREBROS_CONFIG";

/// The default for `invoke.max_payload_bytes`: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

const MODE_EXPECTED: &str = "expected one of in_process, worker_process, subprocess";
const BOOL_EXPECTED: &str = "expected true, false, 1, 0, yes or no";
const MS_EXPECTED: &str = "expected a whole number of milliseconds";
const COUNT_EXPECTED: &str = "expected a whole number";
const MAX_POOL_SIZE: u64 = 64;
/// The longest deadline of a call, or of the start-up, in milliseconds (24 h).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
const MAX_CANCEL_GRACE_MS: u64 = 60_000;
const MAX_PAYLOAD_LIMIT: u64 = 1024 * 1024 * 1024;
const MAX_RETRIES: u64 = 100;
const MAX_RETRY_BACKOFF_MS: u64 = 600_000;
/// Queues and caches allocate their capacity up front: beyond this is a typo.
const MAX_CAPACITY: u64 = 1_000_000;
/// The longest config file read (a config is a few hundred bytes).
const MAX_CONFIG_FILE_BYTES: usize = 1024 * 1024;

/// How a call is executed (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Embedded CPython on a pool of worker threads.
    #[default]
    InProcess,
    /// Long-lived Python children speaking newline-delimited JSON.
    WorkerProcess,
    /// One Python process per call.
    Subprocess,
}

impl Mode {
    /// Every mode, in declaration order.
    pub const ALL: [Mode; 3] = [Mode::InProcess, Mode::WorkerProcess, Mode::Subprocess];

    /// The snake_case name used in config, on the CLI and in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::InProcess => "in_process",
            Mode::WorkerProcess => "worker_process",
            Mode::Subprocess => "subprocess",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown [`Mode`] name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseModeError {
    /// The text that is not a mode name.
    pub input: String,
}

impl fmt::Display for ParseModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown mode {:?}: {MODE_EXPECTED}", self.input)
    }
}

impl std::error::Error for ParseModeError {}

impl FromStr for Mode {
    type Err = ParseModeError;

    /// Parses a snake_case mode name.
    ///
    /// ```
    /// use cerebros_bridge::core::config::Mode;
    /// assert_eq!("worker_process".parse::<Mode>().unwrap(), Mode::WorkerProcess);
    /// assert!("fast".parse::<Mode>().is_err());
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseModeError {
                input: s.to_owned(),
            })
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse()
            .map_err(|_| serde::de::Error::custom(MODE_EXPECTED))
    }
}

/// Where a [`Config`] was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// No file: built-in defaults (plus environment overrides).
    #[default]
    Defaults,
    /// The config file at this path (plus environment overrides).
    File(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Defaults => f.write_str("defaults"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How calls are run: deadlines, retries, pool and queue sizes (`[invoke]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvokeConfig {
    /// Deadline of a call without its own timeout, in milliseconds (1 to 86 400 000).
    pub default_timeout_ms: u64,
    /// Extra attempts after a retryable failure (0 to 100).
    pub max_retries: u32,
    /// Base of the exponential backoff between attempts, in milliseconds (0 to 600 000).
    pub retry_backoff_ms: u64,
    /// Number of worker threads or processes (1 to 64).
    pub pool_size: usize,
    /// How long a timed-out call may take to stop before its worker is retired, in
    /// milliseconds (1 to 60 000).
    pub cancel_grace_ms: u64,
    /// Largest accepted payload, in bytes of JSON (1 to 1 GiB).
    pub max_payload_bytes: usize,
    /// Most requests waiting for a worker before calls fail as `overloaded` (1 to
    /// 1 000 000).
    pub queue_capacity: usize,
    /// The error classes that are retried.
    pub retry_on: Vec<ErrorClass>,
    /// How long starting the bridge may take (the interpreter, the service module's
    /// import, the worker processes being ready), in milliseconds (1 to 86 400 000).
    pub start_timeout_ms: u64,
}

impl Default for InvokeConfig {
    fn default() -> Self {
        InvokeConfig {
            default_timeout_ms: 15_000,
            max_retries: 2,
            retry_backoff_ms: 750,
            pool_size: 2,
            cancel_grace_ms: 250,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            queue_capacity: 1024,
            retry_on: ErrorClass::ALL
                .into_iter()
                .filter(|class| class.retryable_by_default())
                .collect(),
            start_timeout_ms: 30_000,
        }
    }
}

/// The result cache (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether successful results are cached.
    pub enabled: bool,
    /// How long an entry lives, in milliseconds (at least 1).
    pub ttl_ms: u64,
    /// Most entries kept (1 to 1 000 000 while enabled).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_ms: 30_000,
            max_entries: 512,
        }
    }
}

/// The run store (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Database URL; must start with `sqlite://`.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://cerebros.db".to_owned(),
        }
    }
}

/// MLflow sync (`[mlflow]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlflowConfig {
    /// The MLflow tracking URI.
    pub tracking_uri: String,
    /// The longest a run's end waits for the outbox to sync (a sync call already in
    /// flight included); what is left stays pending. `0`: no wait.
    pub flush_timeout_ms: u64,
}

impl Default for MlflowConfig {
    fn default() -> Self {
        MlflowConfig {
            tracking_uri: "sqlite:///mlflow.db".to_owned(),
            flush_timeout_ms: 30_000,
        }
    }
}

/// The bridge's configuration (DESIGN §6).
///
/// ```
/// use cerebros_bridge::core::config::{Config, Mode};
/// let config = Config::default();
/// assert!(config.enabled);
/// assert_eq!(config.mode, Mode::InProcess);
/// assert_eq!(config.invoke.pool_size, 2);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Whether the bridge may call Python at all.
    pub enabled: bool,
    /// How calls are executed.
    pub mode: Mode,
    /// Directory put on `sys.path`.
    pub repo_path: PathBuf,
    /// The Python service module to load (a dotted module path).
    pub module: String,
    /// The script run per call in subprocess mode; `None`: the module's `__main__`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_path: Option<PathBuf>,
    /// The Python interpreter (the venv of the embedded interpreter, and the program of
    /// the process modes); `None`: chosen by the host. A bare name such as `python3` is
    /// kept as written here; the process modes look it up on `PATH` once at start-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_executable: Option<PathBuf>,
    /// Deadlines, retries, pool and queue.
    pub invoke: InvokeConfig,
    /// The result cache.
    pub cache: CacheConfig,
    /// The run store.
    pub store: StoreConfig,
    /// MLflow sync.
    pub mlflow: MlflowConfig,
    /// Where the config was read from.
    #[serde(skip)]
    pub source: ConfigSource,
    /// Keys set from the environment: config key (e.g. `invoke.pool_size`) to the
    /// name of the variable that set it.
    #[serde(skip)]
    pub env_overrides: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            mode: Mode::InProcess,
            repo_path: PathBuf::from("python"),
            module: "cerebros_service".to_owned(),
            script_path: None,
            python_executable: None,
            invoke: InvokeConfig::default(),
            cache: CacheConfig::default(),
            store: StoreConfig::default(),
            mlflow: MlflowConfig::default(),
            source: ConfigSource::Defaults,
            env_overrides: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Loads the configuration from the process environment and working directory.
    ///
    /// The file is `path` if given, else the file named by `CEREBROS_CONFIG`, else
    /// `./cerebros.toml` if it exists, else none (built-in defaults). Environment
    /// variables then override it, and the result is validated.
    /// See [`Config::load_with`].
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let cwd = std::env::current_dir().map_err(|err| {
            BridgeError::new(
                ErrorClass::Config,
                format!("cannot determine the working directory: {err}"),
            )
        })?;
        Config::load_with(path, &|name| std::env::var(name).ok(), &cwd)
    }

    /// Loads the configuration as [`Config::load`] does, reading variables through
    /// `env` and resolving relative paths against `cwd`.
    ///
    /// Relative paths in a file are resolved against the file's directory; those from
    /// the environment or defaults against `cwd`.
    ///
    /// ```
    /// use cerebros_bridge::core::config::{Config, ConfigSource, Mode};
    /// use std::path::Path;
    ///
    /// let env = |name: &str| match name {
    ///     "CEREBROS_MODE" => Some("subprocess".to_owned()),
    ///     "CEREBROS_POOL_SIZE" => Some("4".to_owned()),
    ///     _ => None,
    /// };
    /// let cwd = Path::new("/nonexistent/cerebros-doc");
    /// let config = Config::load_with(None, &env, cwd).unwrap();
    /// assert_eq!(config.mode, Mode::Subprocess);
    /// assert_eq!(config.invoke.pool_size, 4);
    /// assert_eq!(config.repo_path, cwd.join("python"));
    /// assert_eq!(config.source, ConfigSource::Defaults);
    ///
    /// let bad = |name: &str| (name == "CEREBROS_POOL_SIZE").then(|| "0".to_owned());
    /// let err = Config::load_with(None, &bad, cwd).unwrap_err();
    /// assert_eq!(
    ///     err.message,
    ///     "invoke.pool_size = 0 (from CEREBROS_POOL_SIZE): expected an integer from 1 to 64"
    /// );
    /// ```
    pub fn load_with(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> Result<Config> {
        let mut config = match find_file(path, env, cwd) {
            Some((file, how)) => Config::from_file(&file, how, cwd)?,
            None => Config::defaults_in(cwd),
        };
        config.apply_env(env, cwd)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML `text` as the content of the file at `path` (used in messages and
    /// to resolve relative paths), without environment overrides or validation; a
    /// `repo_path` the file does not set stays the relative default.
    ///
    /// ```
    /// use cerebros_bridge::core::config::Config;
    /// use std::path::Path;
    ///
    /// let path = Path::new("/etc/cerebros/cerebros.toml");
    /// let text = "repo_path = \"py\"\n[invoke]\npool_size = 8\n";
    /// let config = Config::from_toml_str(text, path).unwrap();
    /// assert_eq!(config.invoke.pool_size, 8);
    /// assert_eq!(config.repo_path, Path::new("/etc/cerebros/py"));
    ///
    /// let err = Config::from_toml_str("[invoke]\npool_sise = 8\n", path).unwrap_err();
    /// assert!(err.message.contains("unknown field `pool_sise`"));
    /// ```
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config> {
        let dir = path.parent().unwrap_or(Path::new(""));
        Config::parse_file(text, path, dir)
    }

    /// The configuration as TOML, for showing the effective config.
    ///
    /// ```
    /// use cerebros_bridge::core::config::Config;
    /// let text = Config::default().to_toml_string().unwrap();
    /// assert!(text.contains("mode = \"in_process\""));
    /// ```
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|err| {
            BridgeError::new(
                ErrorClass::Config,
                format!("cannot show the configuration as TOML: {err}"),
            )
        })
    }

    /// Checks every value against what its key accepts.
    pub fn validate(&self) -> Result<()> {
        for (key, value, range, what) in self.numeric_limits() {
            self.check_range(key, value, range, what)?;
        }
        self.check_module()?;
        self.check_retry_on()?;
        self.check_store_url()
    }

    /// Where the value of `key` came from: its environment variable, the file, or
    /// `defaults`.
    pub fn origin(&self, key: &str) -> String {
        match self.env_overrides.get(key) {
            Some(var) => var.clone(),
            None => self.source.to_string(),
        }
    }

    fn defaults_in(cwd: &Path) -> Config {
        let mut config = Config::default();
        config.repo_path = cwd.join(&config.repo_path);
        config
    }

    fn from_file(path: &Path, how: &str, cwd: &Path) -> Result<Config> {
        let text = bounded_read::read_text(path, MAX_CONFIG_FILE_BYTES).map_err(|err| {
            let source = format!("{} ({how})", path.display());
            BridgeError::new(
                ErrorClass::Config,
                format!("cannot read config file {source}: {err}"),
            )
            .with_detail("source", source)
        })?;
        Config::parse_file(&text, path, path.parent().unwrap_or(cwd))
    }

    fn parse_file(text: &str, path: &Path, dir: &Path) -> Result<Config> {
        let mut config: Config =
            toml::from_str(text).map_err(|err| toml_error(&err, text, path))?;
        let keys: PathKeys = toml::from_str(text).map_err(|err| toml_error(&err, text, path))?;
        let repo_base = if keys.repo_path.is_some() {
            dir
        } else {
            Path::new("")
        };
        config.repo_path = repo_base.join(&config.repo_path);
        config.script_path = config.script_path.map(|p| dir.join(p));
        config.python_executable = config.python_executable.map(|p| resolve_executable(dir, p));
        config.source = ConfigSource::File(path.to_path_buf());
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Result<()> {
        let mut vars = EnvReader::new(env);
        if let Some(v) = vars.flag("CEREBROS_ENABLED", "enabled")? {
            self.enabled = v;
        }
        if let Some(v) = vars.mode("CEREBROS_MODE", "mode")? {
            self.mode = v;
        }
        if let Some(v) = vars.text("CEREBROS_REPO", "repo_path") {
            self.repo_path = PathBuf::from(v);
        }
        if let Some(v) = vars.text("CEREBROS_MODULE", "module") {
            self.module = v;
        }
        if let Some(v) = vars.text("CEREBROS_SCRIPT", "script_path") {
            self.script_path = Some(cwd.join(v));
        }
        if let Some(v) = vars.text("CEREBROS_PYTHON", "python_executable") {
            self.python_executable = Some(resolve_executable(cwd, PathBuf::from(v)));
        }
        self.apply_env_numbers(&mut vars)?;
        if let Some(v) = vars.text("CEREBROS_STORE_URL", "store.url") {
            self.store.url = v;
        }
        if let Some(v) = vars.text("MLFLOW_TRACKING_URI", "mlflow.tracking_uri") {
            self.mlflow.tracking_uri = v;
        }
        // Defaults and env values are relative to the working directory; joining an
        // absolute path (a file's resolved value) leaves it unchanged.
        self.repo_path = cwd.join(&self.repo_path);
        self.env_overrides.extend(vars.overrides);
        Ok(())
    }

    fn apply_env_numbers(&mut self, vars: &mut EnvReader<'_>) -> Result<()> {
        let invoke = &mut self.invoke;
        let cache = &mut self.cache;
        vars.number(
            "CEREBROS_TIMEOUT_MS",
            "invoke.default_timeout_ms",
            MS_EXPECTED,
            &mut invoke.default_timeout_ms,
        )?;
        vars.number(
            "CEREBROS_MAX_RETRIES",
            "invoke.max_retries",
            COUNT_EXPECTED,
            &mut invoke.max_retries,
        )?;
        vars.number(
            "CEREBROS_RETRY_BACKOFF_MS",
            "invoke.retry_backoff_ms",
            MS_EXPECTED,
            &mut invoke.retry_backoff_ms,
        )?;
        vars.number(
            "CEREBROS_POOL_SIZE",
            "invoke.pool_size",
            COUNT_EXPECTED,
            &mut invoke.pool_size,
        )?;
        if let Some(v) = vars.flag("CEREBROS_CACHE_ENABLED", "cache.enabled")? {
            cache.enabled = v;
        }
        vars.number(
            "CEREBROS_CACHE_TTL_MS",
            "cache.ttl_ms",
            MS_EXPECTED,
            &mut cache.ttl_ms,
        )?;
        vars.number(
            "CEREBROS_CACHE_MAX_ENTRIES",
            "cache.max_entries",
            COUNT_EXPECTED,
            &mut cache.max_entries,
        )
    }

    fn invalid(&self, key: &str, value: impl fmt::Display, expected: &str) -> BridgeError {
        value_error(key, value, &self.origin(key), expected)
    }

    /// The numeric keys with their values, accepted ranges and units.
    fn numeric_limits(&self) -> Vec<NumericLimit> {
        const MS: &str = "a whole number of milliseconds";
        const INT: &str = "an integer";
        let (invoke, cache) = (&self.invoke, &self.cache);
        let mut limits = vec![
            (
                "invoke.pool_size",
                invoke.pool_size as u64,
                1..=MAX_POOL_SIZE,
                INT,
            ),
            (
                "invoke.default_timeout_ms",
                invoke.default_timeout_ms,
                1..=MAX_TIMEOUT_MS,
                MS,
            ),
            (
                "invoke.cancel_grace_ms",
                invoke.cancel_grace_ms,
                1..=MAX_CANCEL_GRACE_MS,
                MS,
            ),
            (
                "invoke.max_payload_bytes",
                invoke.max_payload_bytes as u64,
                1..=MAX_PAYLOAD_LIMIT,
                "a number of bytes",
            ),
            (
                "invoke.max_retries",
                u64::from(invoke.max_retries),
                0..=MAX_RETRIES,
                INT,
            ),
            (
                "invoke.retry_backoff_ms",
                invoke.retry_backoff_ms,
                0..=MAX_RETRY_BACKOFF_MS,
                MS,
            ),
            (
                "invoke.start_timeout_ms",
                invoke.start_timeout_ms,
                1..=MAX_TIMEOUT_MS,
                MS,
            ),
            (
                "invoke.queue_capacity",
                invoke.queue_capacity as u64,
                1..=MAX_CAPACITY,
                INT,
            ),
            ("cache.ttl_ms", cache.ttl_ms, 1..=u64::MAX, MS),
            (
                "mlflow.flush_timeout_ms",
                self.mlflow.flush_timeout_ms,
                0..=MAX_TIMEOUT_MS,
                MS,
            ),
        ];
        if cache.enabled {
            limits.push((
                "cache.max_entries",
                cache.max_entries as u64,
                1..=MAX_CAPACITY,
                INT,
            ));
        }
        limits
    }

    fn check_range(
        &self,
        key: &str,
        value: u64,
        range: RangeInclusive<u64>,
        what: &str,
    ) -> Result<()> {
        if range.contains(&value) {
            return Ok(());
        }
        let expected = match *range.end() {
            u64::MAX => format!("expected {what} of at least {}", range.start()),
            max => format!("expected {what} from {} to {max}", range.start()),
        };
        Err(self.invalid(key, value, &expected))
    }

    fn check_module(&self) -> Result<()> {
        if is_module_path(&self.module) {
            return Ok(());
        }
        let expected = "expected a dotted Python module name such as cerebros_service";
        Err(self.invalid("module", format_args!("{:?}", self.module), expected))
    }

    fn check_retry_on(&self) -> Result<()> {
        let never = [
            ErrorClass::Contract,
            ErrorClass::Config,
            ErrorClass::Dependency,
        ];
        let Some(bad) = self.invoke.retry_on.iter().find(|c| never.contains(c)) else {
            return Ok(());
        };
        let names: Vec<&str> = self.invoke.retry_on.iter().map(|c| c.as_str()).collect();
        let expected = format!(
            "{bad} errors are never retried; expected error classes other than contract, config and dependency"
        );
        Err(self.invalid("invoke.retry_on", format_args!("{names:?}"), &expected))
    }

    /// `store.url` is a `sqlite://` URL whose path can hold a store (see
    /// [`crate::nas::store::check_store_path`]).
    fn check_store_url(&self) -> Result<()> {
        let url = &self.store.url;
        let Ok(path) = crate::nas::store::store_path(url) else {
            let expected = "expected a sqlite:// URL such as sqlite://cerebros.db";
            return Err(self.invalid("store.url", format_args!("{url:?}"), expected));
        };
        crate::nas::store::check_store_path(&path).map_err(|reason| {
            let expected = format!(
                "{reason}; expected sqlite://PATH naming a regular file, or a new file in a folder"
            );
            self.invalid("store.url", format_args!("{url:?}"), &expected)
        })
    }
}

/// A numeric key, its value, the range it accepts and what it is ("an integer").
type NumericLimit = (&'static str, u64, RangeInclusive<u64>, &'static str);

/// The only key whose presence in a file matters beyond its value: a file's
/// `repo_path` is relative to the file, the default one to the working directory.
#[derive(Deserialize)]
struct PathKeys {
    repo_path: Option<toml::Value>,
}

/// Reads the override variables, remembering which config keys they set.
struct EnvReader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    overrides: BTreeMap<String, String>,
}

impl<'a> EnvReader<'a> {
    fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        EnvReader {
            env,
            overrides: BTreeMap::new(),
        }
    }

    /// The variable's value; unset or blank is `None`.
    fn text(&mut self, var: &str, key: &str) -> Option<String> {
        let value = (self.env)(var).filter(|v| !v.trim().is_empty())?;
        self.overrides.insert(key.to_owned(), var.to_owned());
        Some(value)
    }

    fn flag(&mut self, var: &str, key: &str) -> Result<Option<bool>> {
        let Some(value) = self.text(var, key) else {
            return Ok(None);
        };
        match parse_bool(&value) {
            Some(flag) => Ok(Some(flag)),
            None => Err(value_error(
                key,
                format_args!("{value:?}"),
                var,
                BOOL_EXPECTED,
            )),
        }
    }

    fn mode(&mut self, var: &str, key: &str) -> Result<Option<Mode>> {
        let Some(value) = self.text(var, key) else {
            return Ok(None);
        };
        match value.trim().parse() {
            Ok(mode) => Ok(Some(mode)),
            Err(_) => Err(value_error(
                key,
                format_args!("{value:?}"),
                var,
                MODE_EXPECTED,
            )),
        }
    }

    /// Sets `target` from the variable when it is set.
    fn number<T: FromStr>(
        &mut self,
        var: &str,
        key: &str,
        expected: &str,
        target: &mut T,
    ) -> Result<()> {
        let Some(value) = self.text(var, key) else {
            return Ok(());
        };
        *target = value
            .trim()
            .parse()
            .map_err(|_| value_error(key, format_args!("{value:?}"), var, expected))?;
        Ok(())
    }
}

/// Parses `true/false/1/0/yes/no`, case-insensitively.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Whether `name` is a dotted path of Python identifiers (`pkg.sub.module`).
fn is_module_path(name: &str) -> bool {
    name.split('.').all(is_identifier)
}

fn is_identifier(segment: &str) -> bool {
    let mut chars = segment.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// An interpreter path: a bare name (`python3`) is left for a `PATH` lookup, anything
/// with a directory part is resolved against `base`.
fn resolve_executable(base: &Path, path: PathBuf) -> PathBuf {
    if path.components().count() > 1 {
        base.join(path)
    } else {
        path
    }
}

/// The config file to read and how it was chosen, if any.
fn find_file(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Option<(PathBuf, &'static str)> {
    if let Some(path) = path {
        return Some((cwd.join(path), "given path"));
    }
    if let Some(named) = env(CONFIG_ENV).filter(|v| !v.trim().is_empty()) {
        return Some((cwd.join(named), CONFIG_ENV));
    }
    let local = cwd.join(DEFAULT_FILE_NAME);
    local.is_file().then_some((local, "working directory"))
}

/// `KEY = VALUE (from SOURCE): EXPECTED`, with `key` and `source` in the details.
fn value_error(key: &str, value: impl fmt::Display, source: &str, expected: &str) -> BridgeError {
    BridgeError::new(
        ErrorClass::Config,
        format!("{key} = {value} (from {source}): {expected}"),
    )
    .with_detail("key", key)
    .with_detail("source", source)
}

/// A TOML syntax, type or unknown-key error, with the file, line, column and (where it
/// can be read off the line) the key.
fn toml_error(err: &toml::de::Error, text: &str, path: &Path) -> BridgeError {
    let file = path.display().to_string();
    let message = err.message();
    let Some(span) = err.span().filter(|s| text.get(s.clone()).is_some()) else {
        return BridgeError::new(ErrorClass::Config, format!("{file}: {message}"))
            .with_detail("source", file);
    };
    let (line, column) = line_column(text, span.start);
    let source = format!("{file} line {line} column {column}");
    let error = match key_at(text, span.start) {
        Some(found) => {
            let value = &text[span];
            let shown = found.on_value
                && !value.trim().is_empty()
                && value.len() <= 80
                && !value.contains('\n');
            let value_part = if shown {
                format!(" = {value}")
            } else {
                String::new()
            };
            BridgeError::new(
                ErrorClass::Config,
                format!("{}{value_part} (from {source}): {message}", found.key),
            )
            .with_detail("key", found.key)
        }
        None => BridgeError::new(ErrorClass::Config, format!("{source}: {message}")),
    };
    error.with_detail("source", file)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// A `key = value` line's dotted key, read off the text.
struct KeyAt {
    key: String,
    /// Whether the offset lies in the value rather than the key.
    on_value: bool,
}

/// The full key of the `key = value` line holding byte `offset`, prefixed with the
/// table header above it; `None` where the line has no `=`.
fn key_at(text: &str, offset: usize) -> Option<KeyAt> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let eq = line.find('=')?;
    let key = line[..eq].trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let key = match table_above(&text[..line_start]) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    };
    Some(KeyAt {
        key,
        on_value: offset > line_start + eq,
    })
}

/// The name of the last `[table]` header in `text`.
fn table_above(text: &str) -> Option<&str> {
    let header = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))?;
    let inner = header.trim_start_matches('[');
    Some(inner[..inner.find(']')?].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        Config::load_with(None, &env_of(pairs), dir.path())
    }

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join(DEFAULT_FILE_NAME);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_file(text: &str) -> (tempfile::TempDir, Result<Config>) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), text);
        let result = Config::load_with(Some(&path), &no_env, dir.path());
        (dir, result)
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::default();
        assert!(c.enabled);
        assert_eq!(c.mode, Mode::InProcess);
        assert_eq!(c.repo_path, PathBuf::from("python"));
        assert_eq!(c.module, "cerebros_service");
        assert_eq!(c.script_path, None);
        assert_eq!(c.python_executable, None);
        assert_eq!(c.invoke.default_timeout_ms, 15_000);
        assert_eq!(c.invoke.max_retries, 2);
        assert_eq!(c.invoke.retry_backoff_ms, 750);
        assert_eq!(c.invoke.pool_size, 2);
        assert_eq!(c.invoke.cancel_grace_ms, 250);
        assert_eq!(c.invoke.max_payload_bytes, 16 * 1024 * 1024);
        assert_eq!(c.invoke.queue_capacity, 1024);
        assert_eq!(c.invoke.start_timeout_ms, 30_000);
        assert_eq!(
            c.invoke.retry_on,
            vec![
                ErrorClass::Timeout,
                ErrorClass::SubprocessExit,
                ErrorClass::SystemError
            ]
        );
        assert!(c.cache.enabled);
        assert_eq!(c.cache.ttl_ms, 30_000);
        assert_eq!(c.cache.max_entries, 512);
        assert_eq!(c.store.url, "sqlite://cerebros.db");
        assert_eq!(c.mlflow.tracking_uri, "sqlite:///mlflow.db");
        assert_eq!(c.mlflow.flush_timeout_ms, 30_000);
        assert_eq!(c.source, ConfigSource::Defaults);
        c.validate().unwrap();
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
            assert_eq!(mode.to_string(), mode.as_str());
        }
        let err = "fast".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown mode \"fast\": expected one of in_process, worker_process, subprocess"
        );
    }

    #[test]
    fn no_file_gives_defaults_resolved_against_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load_with(None, &no_env, dir.path()).unwrap();
        assert_eq!(c.source, ConfigSource::Defaults);
        assert_eq!(c.repo_path, dir.path().join("python"));
        assert!(c.env_overrides.is_empty());
    }

    #[test]
    fn local_file_is_found_in_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "mode = \"worker_process\"\n");
        let c = Config::load_with(None, &no_env, dir.path()).unwrap();
        assert_eq!(c.mode, Mode::WorkerProcess);
        assert_eq!(c.source, ConfigSource::File(path));
    }

    #[test]
    fn config_env_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(
            sub.join("x.toml"),
            "module = \"my.service\"\nrepo_path = \"src\"\n",
        )
        .unwrap();
        let env = env_of(&[(CONFIG_ENV, "conf/x.toml")]);
        let c = Config::load_with(None, &env, dir.path()).unwrap();
        assert_eq!(c.module, "my.service");
        assert_eq!(c.repo_path, sub.join("src"));
        assert_eq!(c.source, ConfigSource::File(sub.join("x.toml")));
    }

    #[test]
    fn explicit_path_wins_over_env_and_local_file() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "mode = \"subprocess\"\n");
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "mode = \"worker_process\"\n").unwrap();
        let env = env_of(&[(CONFIG_ENV, "missing.toml")]);
        let c = Config::load_with(Some(&other), &env, dir.path()).unwrap();
        assert_eq!(c.mode, Mode::WorkerProcess);
    }

    #[test]
    fn missing_named_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[(CONFIG_ENV, "nope.toml")]);
        let err = Config::load_with(None, &env, dir.path()).unwrap_err();
        assert_eq!(err.class, ErrorClass::Config);
        assert!(
            err.message.starts_with("cannot read config file "),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("nope.toml (CEREBROS_CONFIG)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn file_paths_resolve_against_the_file_directory() {
        let text = "repo_path = \"py\"\nscript_path = \"bin/run.py\"\npython_executable = \"venv/bin/python\"\n";
        let (dir, result) = load_file(text);
        let c = result.unwrap();
        assert_eq!(c.repo_path, dir.path().join("py"));
        assert_eq!(c.script_path, Some(dir.path().join("bin/run.py")));
        assert_eq!(
            c.python_executable,
            Some(dir.path().join("venv/bin/python"))
        );
    }

    #[test]
    fn default_repo_path_resolves_against_cwd_even_with_a_file() {
        let cwd = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(conf.path(), "module = \"svc\"\n");
        let c = Config::load_with(Some(&path), &no_env, cwd.path()).unwrap();
        assert_eq!(c.repo_path, cwd.path().join("python"));
    }

    #[test]
    fn absolute_and_bare_paths_are_kept() {
        let (_dir, result) =
            load_file("repo_path = \"/opt/py\"\npython_executable = \"python3\"\n");
        let c = result.unwrap();
        assert_eq!(c.repo_path, PathBuf::from("/opt/py"));
        assert_eq!(c.python_executable, Some(PathBuf::from("python3")));
    }

    #[test]
    fn env_overrides_every_key() {
        let env = [
            ("CEREBROS_ENABLED", "No"),
            ("CEREBROS_MODE", "subprocess"),
            ("CEREBROS_REPO", "lib"),
            ("CEREBROS_MODULE", "pkg.svc"),
            ("CEREBROS_SCRIPT", "run.py"),
            ("CEREBROS_PYTHON", "/usr/bin/python3"),
            ("CEREBROS_TIMEOUT_MS", "1000"),
            ("CEREBROS_MAX_RETRIES", "5"),
            ("CEREBROS_RETRY_BACKOFF_MS", "10"),
            ("CEREBROS_POOL_SIZE", " 8 "),
            ("CEREBROS_CACHE_ENABLED", "0"),
            ("CEREBROS_CACHE_TTL_MS", "99"),
            ("CEREBROS_CACHE_MAX_ENTRIES", "7"),
            ("CEREBROS_STORE_URL", "sqlite:///tmp/x.db"),
            ("MLFLOW_TRACKING_URI", "http://mlflow:5000"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load_with(None, &env_of(&env), dir.path()).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.mode, Mode::Subprocess);
        assert_eq!(c.repo_path, dir.path().join("lib"));
        assert_eq!(c.module, "pkg.svc");
        assert_eq!(c.script_path, Some(dir.path().join("run.py")));
        assert_eq!(c.python_executable, Some(PathBuf::from("/usr/bin/python3")));
        assert_eq!(c.invoke.default_timeout_ms, 1000);
        assert_eq!(c.invoke.max_retries, 5);
        assert_eq!(c.invoke.retry_backoff_ms, 10);
        assert_eq!(c.invoke.pool_size, 8);
        assert!(!c.cache.enabled);
        assert_eq!(c.cache.ttl_ms, 99);
        assert_eq!(c.cache.max_entries, 7);
        assert_eq!(c.store.url, "sqlite:///tmp/x.db");
        assert_eq!(c.mlflow.tracking_uri, "http://mlflow:5000");
        assert_eq!(c.env_overrides.len(), env.len());
        assert_eq!(c.origin("invoke.pool_size"), "CEREBROS_POOL_SIZE");
    }

    #[test]
    fn env_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "[invoke]\npool_size = 3\ndefault_timeout_ms = 5\n",
        );
        let env = env_of(&[("CEREBROS_POOL_SIZE", "9")]);
        let c = Config::load_with(Some(&path), &env, dir.path()).unwrap();
        assert_eq!(c.invoke.pool_size, 9);
        assert_eq!(c.invoke.default_timeout_ms, 5);
        assert_eq!(
            c.origin("invoke.default_timeout_ms"),
            path.display().to_string()
        );
    }

    #[test]
    fn booleans_accept_the_usual_spellings() {
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("NO", false),
        ] {
            let c = load_env(&[("CEREBROS_ENABLED", text)]).unwrap();
            assert_eq!(c.enabled, want, "{text}");
        }
        let err = load_env(&[("CEREBROS_CACHE_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(
            err.message,
            "cache.enabled = \"maybe\" (from CEREBROS_CACHE_ENABLED): expected true, false, 1, 0, yes or no"
        );
    }

    #[test]
    fn empty_env_values_are_unset() {
        let c = load_env(&[
            ("CEREBROS_POOL_SIZE", ""),
            ("CEREBROS_MODE", "  "),
            ("CEREBROS_MODULE", ""),
        ])
        .unwrap();
        assert_eq!(c.invoke.pool_size, 2);
        assert_eq!(c.mode, Mode::InProcess);
        assert_eq!(c.module, "cerebros_service");
        assert!(c.env_overrides.is_empty());
    }

    #[test]
    fn unparsable_env_integer_names_key_and_variable() {
        let err = load_env(&[("CEREBROS_TIMEOUT_MS", "abc")]).unwrap_err();
        assert_eq!(err.class, ErrorClass::Config);
        assert_eq!(
            err.message,
            "invoke.default_timeout_ms = \"abc\" (from CEREBROS_TIMEOUT_MS): expected a whole number of milliseconds"
        );
        assert_eq!(err.details["key"], "invoke.default_timeout_ms");
        assert_eq!(err.details["source"], "CEREBROS_TIMEOUT_MS");
        let err = load_env(&[("CEREBROS_MAX_RETRIES", "-1")]).unwrap_err();
        assert_eq!(
            err.message,
            "invoke.max_retries = \"-1\" (from CEREBROS_MAX_RETRIES): expected a whole number"
        );
    }

    #[test]
    fn out_of_range_env_value_names_the_variable() {
        let err = load_env(&[("CEREBROS_POOL_SIZE", "0")]).unwrap_err();
        assert_eq!(
            err.message,
            "invoke.pool_size = 0 (from CEREBROS_POOL_SIZE): expected an integer from 1 to 64"
        );
        assert_eq!(err.details["source"], "CEREBROS_POOL_SIZE");
    }

    #[test]
    fn bad_env_mode_is_rejected() {
        let err = load_env(&[("CEREBROS_MODE", "fast")]).unwrap_err();
        assert_eq!(
            err.message,
            "mode = \"fast\" (from CEREBROS_MODE): expected one of in_process, worker_process, subprocess"
        );
    }

    #[test]
    fn bad_file_mode_names_key_file_and_choices() {
        let (dir, result) = load_file("enabled = true\nmode = \"fast\"\n");
        let err = result.unwrap_err();
        let file = dir.path().join(DEFAULT_FILE_NAME).display().to_string();
        assert_eq!(err.class, ErrorClass::Config);
        assert_eq!(
            err.message,
            format!("mode = \"fast\" (from {file} line 2 column 8): expected one of in_process, worker_process, subprocess")
        );
        assert_eq!(err.details["key"], "mode");
        assert_eq!(err.details["source"], file.as_str());
    }

    #[test]
    fn unknown_key_in_a_table_names_file_and_key() {
        let (dir, result) = load_file("[invoke]\npool_sise = 3\n");
        let err = result.unwrap_err();
        let file = dir.path().join(DEFAULT_FILE_NAME).display().to_string();
        assert!(err.message.starts_with(&format!("invoke.pool_sise (from {file} line 2 column 1): unknown field `pool_sise`, expected one of")), "{}", err.message);
    }

    #[test]
    fn unknown_table_and_top_level_key_are_rejected() {
        let (_dir, result) = load_file("[invok]\npool_size = 3\n");
        let err = result.unwrap_err();
        assert!(
            err.message
                .contains("line 1 column 2: unknown field `invok`"),
            "{}",
            err.message
        );
        let (_dir, result) = load_file("colour = 1\n");
        assert!(result.unwrap_err().message.contains("colour (from "));
    }

    #[test]
    fn wrong_type_in_file_names_key_and_value() {
        let (_dir, result) = load_file("[cache]\nttl_ms = \"soon\"\n");
        let err = result.unwrap_err();
        assert!(
            err.message.starts_with("cache.ttl_ms = \"soon\" (from "),
            "{}",
            err.message
        );
        assert!(
            err.message
                .ends_with("invalid type: string \"soon\", expected u64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn toml_syntax_error_names_file_and_line() {
        let (dir, result) = load_file("mode = \n");
        let err = result.unwrap_err();
        let file = dir.path().join(DEFAULT_FILE_NAME).display().to_string();
        assert!(err.message.contains(&file), "{}", err.message);
        assert!(
            err.message
                .starts_with(&format!("mode (from {file} line 1 column 8): ")),
            "{}",
            err.message
        );
    }

    #[test]
    fn out_of_range_file_value_names_the_file() {
        let (dir, result) = load_file("[invoke]\npool_size = 65\n");
        let file = dir.path().join(DEFAULT_FILE_NAME).display().to_string();
        assert_eq!(
            result.unwrap_err().message,
            format!("invoke.pool_size = 65 (from {file}): expected an integer from 1 to 64")
        );
    }

    fn validation_message(edit: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        edit(&mut c);
        let err = c.validate().unwrap_err();
        assert_eq!(err.class, ErrorClass::Config);
        err.message
    }

    #[test]
    fn validation_limits() {
        let m = validation_message(|c| c.invoke.default_timeout_ms = 0);
        assert_eq!(m, "invoke.default_timeout_ms = 0 (from defaults): expected a whole number of milliseconds from 1 to 86400000");
        let m = validation_message(|c| c.invoke.default_timeout_ms = 86_400_001);
        assert!(m.starts_with("invoke.default_timeout_ms = 86400001"));
        let m = validation_message(|c| c.invoke.cancel_grace_ms = 60_001);
        assert!(m.ends_with("expected a whole number of milliseconds from 1 to 60000"));
        let m = validation_message(|c| c.invoke.max_payload_bytes = 0);
        assert!(m.ends_with("expected a number of bytes from 1 to 1073741824"));
        let m = validation_message(|c| c.invoke.queue_capacity = 0);
        assert_eq!(
            m,
            "invoke.queue_capacity = 0 (from defaults): expected an integer from 1 to 1000000"
        );
        let m = validation_message(|c| c.invoke.max_retries = 101);
        assert_eq!(
            m,
            "invoke.max_retries = 101 (from defaults): expected an integer from 0 to 100"
        );
        let m = validation_message(|c| c.invoke.retry_backoff_ms = u64::MAX);
        assert!(m.ends_with("expected a whole number of milliseconds from 0 to 600000"));
        let m = validation_message(|c| c.invoke.start_timeout_ms = 0);
        assert!(m.starts_with("invoke.start_timeout_ms = 0"));
        let m = validation_message(|c| c.cache.max_entries = 1_000_001);
        assert!(m.ends_with("from 1 to 1000000"), "{m}");
        let m = validation_message(|c| c.cache.ttl_ms = 0);
        assert!(m.starts_with("cache.ttl_ms = 0"));
        let m = validation_message(|c| c.mlflow.flush_timeout_ms = 86_400_001);
        assert!(m.ends_with("expected a whole number of milliseconds from 0 to 86400000"));
        let m = validation_message(|c| c.cache.max_entries = 0);
        assert!(m.starts_with("cache.max_entries = 0"));
        let mut c = Config::default();
        c.cache.enabled = false;
        c.cache.max_entries = 0;
        c.validate().unwrap();
    }

    #[test]
    fn store_urls_must_name_a_file_that_can_hold_a_store() {
        for bad in [
            "sqlite://",
            "sqlite://:memory:",
            "sqlite:///dev/null",
            "sqlite:///tmp",
        ] {
            let m = validation_message(|c| c.store.url = bad.to_owned());
            assert!(
                m.starts_with(&format!("store.url = {bad:?} (from defaults): ")),
                "{m}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for good in [dir.path().join("new.db"), dir.path().join("a/b/new.db")] {
            let c = Config {
                store: StoreConfig {
                    url: format!("sqlite://{}", good.display()),
                },
                ..Config::default()
            };
            c.validate().unwrap();
        }
    }

    #[test]
    fn module_must_be_a_dotted_identifier_path() {
        for good in ["cerebros_service", "a.b.c", "_private._x", "pkg2.mod_3"] {
            let c = Config {
                module: good.to_owned(),
                ..Config::default()
            };
            c.validate().unwrap();
        }
        for bad in ["", "1abc", "a..b", "a.", "my-service", "a b"] {
            let m = validation_message(|c| c.module = bad.to_owned());
            assert_eq!(
                m,
                format!("module = {bad:?} (from defaults): expected a dotted Python module name such as cerebros_service")
            );
        }
    }

    #[test]
    fn retry_on_refuses_never_retryable_classes() {
        let m = validation_message(|c| c.invoke.retry_on.push(ErrorClass::Contract));
        assert_eq!(m, "invoke.retry_on = [\"timeout\", \"subprocess_exit\", \"system_error\", \"contract\"] (from defaults): contract errors are never retried; expected error classes other than contract, config and dependency");
        let mut c = Config::default();
        c.invoke.retry_on.push(ErrorClass::Exception);
        c.validate().unwrap();
    }

    #[test]
    fn retry_on_reads_class_names_from_toml() {
        let (_dir, result) = load_file("[invoke]\nretry_on = [\"timeout\", \"exception\"]\n");
        assert_eq!(
            result.unwrap().invoke.retry_on,
            vec![ErrorClass::Timeout, ErrorClass::Exception]
        );
        let (_dir, result) = load_file("[invoke]\nretry_on = [\"dependency\"]\n");
        assert!(result
            .unwrap_err()
            .message
            .contains("dependency errors are never retried"));
    }

    #[test]
    fn store_url_must_be_sqlite() {
        let m = validation_message(|c| c.store.url = "postgres://db".to_owned());
        assert_eq!(m, "store.url = \"postgres://db\" (from defaults): expected a sqlite:// URL such as sqlite://cerebros.db");
    }

    #[test]
    fn toml_round_trip_keeps_the_values() {
        let mut c = Config {
            mode: Mode::WorkerProcess,
            script_path: Some(PathBuf::from("/srv/run.py")),
            ..Config::default()
        };
        c.invoke.retry_on = vec![ErrorClass::Timeout];
        c.cache.ttl_ms = 5;
        let text = c.to_toml_string().unwrap();
        assert!(text.contains("mode = \"worker_process\""), "{text}");
        assert!(!text.contains("python_executable"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
