//! Loading a [`Config`]: which file is read, parsing it (relative paths against the
//! file's folder), the environment's overrides on top, and the TOML shown back.

use super::toml_error::toml_error;
use super::{Config, ConfigSource};
use crate::core::bounded_read;
use crate::core::error::{BridgeError, ErrorClass, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The config file looked for in the working directory when none is named.
pub const DEFAULT_FILE_NAME: &str = "cerebros.toml";

/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "CEREBROS_CONFIG";

/// The longest config file read (a config is a few hundred bytes).
const MAX_CONFIG_FILE_BYTES: usize = 1024 * 1024;

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
            .with_source(err)
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
            .with_source(err)
        })
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
        let text = bounded_read::read_text_now(path, MAX_CONFIG_FILE_BYTES).map_err(|err| {
            let source = format!("{} ({how})", path.display());
            BridgeError::new(
                ErrorClass::Config,
                format!("cannot read config file {source}: {err}"),
            )
            .with_detail("source", source)
            .with_source(err)
        })?;
        Config::parse_file(&text, path, path.parent().unwrap_or(cwd))
    }

    fn parse_file(text: &str, path: &Path, dir: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|err| toml_error(err, text, path))?;
        let keys: PathKeys = toml::from_str(text).map_err(|err| toml_error(err, text, path))?;
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
}

/// The only key whose presence in a file matters beyond its value: a file's
/// `repo_path` is relative to the file, the default one to the working directory.
#[derive(Deserialize)]
struct PathKeys {
    repo_path: Option<toml::Value>,
}

/// An interpreter path: a bare name (`python3`) is left for a `PATH` lookup, anything
/// with a directory part is resolved against `base`.
pub(super) fn resolve_executable(base: &Path, path: PathBuf) -> PathBuf {
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
