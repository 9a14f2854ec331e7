//! The environment's overrides: one variable per key, with the seed's names
//! (`CEREBROS_POOL_SIZE`, …); unset or blank leaves the key as it was.

use super::load::resolve_executable;
use super::mode::MODE_EXPECTED;
use super::{value_error, Config, ExecutorKind, Mode, OtlpProtocol};
use crate::core::error::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

const BOOL_EXPECTED: &str = "expected true, false, 1, 0, yes or no";
const MS_EXPECTED: &str = "expected a whole number of milliseconds";
const COUNT_EXPECTED: &str = "expected a whole number";
/// What `telemetry.otlp_protocol` accepts.
pub(super) const PROTOCOL_EXPECTED: &str = "expected http/protobuf or grpc";
/// What `executor.kind` accepts.
const EXECUTOR_EXPECTED: &str = "expected local or ray";

impl Config {
    /// Sets the keys whose variables `env` holds; relative paths resolve against `cwd`.
    pub(super) fn apply_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> Result<()> {
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
        if let Some(v) = vars.text("CEREBROS_SERVE_LISTEN", "serve.listen") {
            self.serve.listen = v;
        }
        if let Some(v) = vars.text("CEREBROS_SERVE_TOKEN", "serve.token") {
            self.serve.token = Some(v);
        }
        self.apply_env_telemetry(&mut vars)?;
        self.apply_env_executor(&mut vars)?;
        // Defaults and env values are relative to the working directory; joining an
        // absolute path (a file's resolved value) leaves it unchanged.
        self.repo_path = cwd.join(&self.repo_path);
        self.env_overrides.extend(vars.overrides);
        Ok(())
    }

    /// The OpenTelemetry standard variables (DESIGN §14).
    fn apply_env_telemetry(&mut self, vars: &mut EnvReader<'_>) -> Result<()> {
        let telemetry = &mut self.telemetry;
        if let Some(v) = vars.text("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint") {
            telemetry.otlp_endpoint = Some(v.trim().to_owned());
        }
        if let Some(v) = vars.text("OTEL_EXPORTER_OTLP_PROTOCOL", "telemetry.otlp_protocol") {
            telemetry.otlp_protocol = OtlpProtocol::from_name(v.trim()).ok_or_else(|| {
                value_error(
                    "telemetry.otlp_protocol",
                    format_args!("{v:?}"),
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    PROTOCOL_EXPECTED,
                )
            })?;
        }
        if let Some(v) = vars.text("OTEL_SERVICE_NAME", "telemetry.service_name") {
            telemetry.service_name = v.trim().to_owned();
        }
        Ok(())
    }

    /// `CEREBROS_EXECUTOR`, `CEREBROS_EXECUTOR_ADDRESS`, `CEREBROS_EXECUTOR_NAMESPACE`
    /// (DESIGN §12).
    fn apply_env_executor(&mut self, vars: &mut EnvReader<'_>) -> Result<()> {
        let executor = &mut self.executor;
        if let Some(v) = vars.text("CEREBROS_EXECUTOR", "executor.kind") {
            executor.kind = ExecutorKind::from_name(v.trim()).ok_or_else(|| {
                value_error(
                    "executor.kind",
                    format_args!("{v:?}"),
                    "CEREBROS_EXECUTOR",
                    EXECUTOR_EXPECTED,
                )
            })?;
        }
        if let Some(v) = vars.text("CEREBROS_EXECUTOR_ADDRESS", "executor.address") {
            executor.address = Some(v.trim().to_owned());
        }
        if let Some(v) = vars.text("CEREBROS_EXECUTOR_NAMESPACE", "executor.namespace") {
            executor.namespace = Some(v.trim().to_owned());
        }
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
