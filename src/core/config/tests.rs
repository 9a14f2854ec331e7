//! The configuration's tests: defaults, loading, the environment, the file's errors,
//! validation.

use super::*;
use crate::core::error::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    let (_dir, result) = load_file("repo_path = \"/opt/py\"\npython_executable = \"python3\"\n");
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
        "sqlite://file::memory:?cache=shared",
        "sqlite://file:cerebros.db",
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
    // A file that is not SQLite's: refused here, not at the first query after `ok`.
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "some notes, not a database\n").unwrap();
    let m = validation_message(|c| c.store.url = format!("sqlite://{}", text.display()));
    assert!(m.contains("is not a SQLite database"), "{m}");
    let store = dir.path().join("store.db");
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    for good in [
        dir.path().join("new.db"),
        dir.path().join("a/b/new.db"),
        store,
        empty,
    ] {
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

#[test]
fn telemetry_is_off_by_default_and_read_from_the_otel_variables() {
    let config = load_env(&[]).unwrap();
    assert_eq!(config.telemetry, TelemetryConfig::default());
    assert_eq!(config.telemetry.otlp_endpoint, None);
    assert_eq!(config.telemetry.service_name, DEFAULT_SERVICE_NAME);
    let config = load_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", " http://127.0.0.1:4317 "),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "nas"),
    ])
    .unwrap();
    let telemetry = &config.telemetry;
    assert_eq!(
        telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert_eq!(telemetry.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(telemetry.service_name, "nas");
    assert_eq!(
        config.env_overrides["telemetry.otlp_endpoint"],
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    );
    let err = load_env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
    assert_eq!(err.class, ErrorClass::Config);
    assert!(
        err.message.contains("telemetry.otlp_protocol")
            && err.message.contains("OTEL_EXPORTER_OTLP_PROTOCOL")
            && err.message.contains("http/protobuf or grpc"),
        "{}",
        err.message
    );
}

#[test]
fn telemetry_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[telemetry]\notlp_endpoint = \"http://[::1]:4318\"\notlp_protocol = \"http/protobuf\"\nsample_ratio = 0.25\nflush_timeout_ms = 0\n",
    );
    let config = Config::load_with(Some(&path), &no_env, dir.path()).unwrap();
    assert_eq!(config.telemetry.sample_ratio, 0.25);
    assert_eq!(config.telemetry.flush_timeout_ms, 0);
    type Edit = fn(&mut Config);
    let cases: [(&str, Edit); 7] = [
        ("telemetry.otlp_endpoint", |c| {
            c.telemetry.otlp_endpoint = Some("https://collector:4318".into())
        }),
        ("telemetry.otlp_endpoint", |c| {
            c.telemetry.otlp_endpoint = Some("collector:4318".into())
        }),
        ("telemetry.otlp_endpoint", |c| {
            c.telemetry.otlp_endpoint = Some("http://host:99999".into())
        }),
        ("telemetry.otlp_endpoint", |c| {
            c.telemetry.otlp_endpoint = Some("http:///v1/traces".into())
        }),
        ("telemetry.sample_ratio", |c| c.telemetry.sample_ratio = 1.5),
        ("telemetry.service_name", |c| {
            c.telemetry.service_name = " ".into()
        }),
        ("telemetry.flush_timeout_ms", |c| {
            c.telemetry.flush_timeout_ms = 600_000
        }),
    ];
    for (key, edit) in cases {
        let message = validation_message(edit);
        assert!(message.starts_with(key), "{key}: {message}");
    }
    assert!(validation_message(|c| c.telemetry.sample_ratio = f64::NAN)
        .starts_with("telemetry.sample_ratio"));
    let bad = write_config(dir.path(), "[telemetry]\notlp_protocol = \"udp\"\n");
    let err = Config::load_with(Some(&bad), &no_env, dir.path()).unwrap_err();
    assert!(err.message.contains("telemetry"), "{}", err.message);
}

#[test]
fn executor_is_local_by_default_and_read_from_the_file_and_the_environment() {
    let config = load_env(&[]).unwrap();
    assert_eq!(config.executor, ExecutorConfig::default());
    assert_eq!(config.executor.kind, ExecutorKind::Local);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[executor]\nkind = \"ray\"\naddress = \"ray://head:10001\"\nnamespace = \"nas\"\n",
    );
    let config = Config::load_with(Some(&path), &no_env, dir.path()).unwrap();
    assert_eq!(config.executor.kind, ExecutorKind::Ray);
    assert_eq!(config.executor.address.as_deref(), Some("ray://head:10001"));
    assert_eq!(config.executor.namespace.as_deref(), Some("nas"));
    let config = load_env(&[
        ("CEREBROS_EXECUTOR", "ray"),
        ("CEREBROS_EXECUTOR_ADDRESS", " 127.0.0.1:6379 "),
        ("CEREBROS_EXECUTOR_NAMESPACE", "team"),
    ])
    .unwrap();
    assert_eq!(config.executor.kind, ExecutorKind::Ray);
    assert_eq!(config.executor.address.as_deref(), Some("127.0.0.1:6379"));
    assert_eq!(config.env_overrides["executor.kind"], "CEREBROS_EXECUTOR");
    let err = load_env(&[("CEREBROS_EXECUTOR", "dask")]).unwrap_err();
    assert_eq!(err.class, ErrorClass::Config);
    assert!(
        err.message.contains("executor.kind")
            && err.message.contains("CEREBROS_EXECUTOR")
            && err.message.contains("local or ray"),
        "{}",
        err.message
    );
}

#[test]
fn executor_values_are_checked() {
    for good in [
        "auto",
        "ray://head:10001",
        "127.0.0.1:6379",
        "node-1.lan:6380",
    ] {
        let mut config = Config::default();
        config.executor.address = Some(good.into());
        config.validate().unwrap();
    }
    type Edit = fn(&mut Config);
    let cases: [(&str, Edit); 5] = [
        ("executor.address", |c| c.executor.address = Some("".into())),
        ("executor.address", |c| {
            c.executor.address = Some("http://head:8265".into())
        }),
        ("executor.address", |c| {
            c.executor.address = Some("ray://head".into())
        }),
        ("executor.address", |c| {
            c.executor.address = Some("head:70000".into())
        }),
        ("executor.namespace", |c| {
            c.executor.namespace = Some(" ".into())
        }),
    ];
    for (key, edit) in cases {
        let message = validation_message(edit);
        assert!(message.starts_with(key), "{key}: {message}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(dir.path(), "[executor]\nkind = \"dask\"\n");
    let err = Config::load_with(Some(&bad), &no_env, dir.path()).unwrap_err();
    assert!(err.message.contains("executor"), "{}", err.message);
}
