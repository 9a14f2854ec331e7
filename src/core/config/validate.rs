//! Validation: every value against what its key accepts (the numeric bounds, the
//! module name, the retried error classes, the store URL).

use super::{value_error, CollectorAddress, Config};
use crate::core::error::{BridgeError, ErrorClass, Result};
use std::fmt;
use std::ops::RangeInclusive;

/// The longest deadline of a call, or of the start-up, in milliseconds (24 h).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// The most workers a pool may have (`invoke.pool_size`).
pub const MAX_POOL_SIZE: u64 = 64;
const MAX_CANCEL_GRACE_MS: u64 = 60_000;
const MAX_PAYLOAD_LIMIT: u64 = 1024 * 1024 * 1024;
/// The most retries a call may be given (`invoke.max_retries`, a call's own).
pub const MAX_RETRIES: u64 = 100;
const MAX_RETRY_BACKOFF_MS: u64 = 600_000;
const MAX_CONCURRENT_RUNS: u64 = 64;
const MAX_NICE: u64 = crate::inprocess::pool::priority::MAX_NICE as u64;
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
const MAX_HEADER_TIMEOUT_MS: u64 = 600_000;
const MAX_TELEMETRY_FLUSH_MS: u64 = 60_000;
/// Queues and caches allocate their capacity up front: beyond this is a typo.
const MAX_CAPACITY: u64 = 1_000_000;

impl Config {
    /// Checks every value against what its key accepts.
    pub fn validate(&self) -> Result<()> {
        for (key, value, range, what) in self.numeric_limits() {
            self.check_range(key, value, range, what)?;
        }
        self.check_module()?;
        self.check_retry_on()?;
        self.check_serve()?;
        self.check_telemetry()?;
        self.check_executor()?;
        self.check_store_url()
    }

    /// The error of `key`'s `value`, naming where it came from and what is expected.
    pub(super) fn invalid(
        &self,
        key: &str,
        value: impl fmt::Display,
        expected: &str,
    ) -> BridgeError {
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
            (
                "serve.max_concurrent_runs",
                u64::from(self.serve.max_concurrent_runs),
                1..=MAX_CONCURRENT_RUNS,
                INT,
            ),
            (
                "serve.max_body_bytes",
                self.serve.max_body_bytes as u64,
                1..=MAX_BODY_BYTES,
                "a number of bytes",
            ),
            (
                "invoke.worker_nice",
                u64::from(self.invoke.worker_nice),
                0..=MAX_NICE,
                INT,
            ),
            (
                "serve.worker_nice",
                u64::from(self.serve.worker_nice),
                0..=MAX_NICE,
                INT,
            ),
            (
                "serve.header_timeout_ms",
                self.serve.header_timeout_ms,
                1..=MAX_HEADER_TIMEOUT_MS,
                MS,
            ),
            (
                "telemetry.flush_timeout_ms",
                self.telemetry.flush_timeout_ms,
                0..=MAX_TELEMETRY_FLUSH_MS,
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
}

impl Config {
    /// `serve.listen` is a socket address; a token, when set, is not blank and has
    /// only printable ASCII (it travels in an HTTP header). Whether the address needs a
    /// token is checked when the server starts (it depends on the address resolved).
    fn check_serve(&self) -> Result<()> {
        if self.serve.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(self.invalid(
                "serve.listen",
                format_args!("{:?}", self.serve.listen),
                "expected an IP address and port such as 127.0.0.1:8765 or [::1]:8765",
            ));
        }
        if let Some(token) = &self.serve.token {
            let printable = token.bytes().all(|b| b.is_ascii_graphic());
            if token.is_empty() || !printable {
                // Never echo the token itself.
                return Err(self.invalid(
                    "serve.token",
                    "<hidden>",
                    "expected a non-empty token of printable ASCII characters without spaces",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// `telemetry.otlp_endpoint` is a plain `http://` URL with a host (TLS is not built
    /// in: point it at a local collector or agent), `service_name` is not blank and
    /// `sample_ratio` lies in [0, 1].
    fn check_telemetry(&self) -> Result<()> {
        let telemetry = &self.telemetry;
        if let Some(endpoint) = &telemetry.otlp_endpoint {
            if let Err(why) = CollectorAddress::parse(endpoint) {
                let shown = format_args!("{endpoint:?}");
                return Err(self.invalid("telemetry.otlp_endpoint", shown, why));
            }
        }
        if telemetry.service_name.trim().is_empty() {
            let shown = format_args!("{:?}", telemetry.service_name);
            let expected = "expected a non-empty name such as cerebros-bridge";
            return Err(self.invalid("telemetry.service_name", shown, expected));
        }
        let ratio = telemetry.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            let expected = "expected a number from 0 (no trace) to 1 (every trace)";
            return Err(self.invalid("telemetry.sample_ratio", ratio, expected));
        }
        Ok(())
    }
}

impl Config {
    /// `executor.address` is `auto`, `ray://HOST:PORT` or `HOST:PORT`; `namespace` is a
    /// non-blank name. Whether the cluster answers is checked by `validate` and by a run.
    fn check_executor(&self) -> Result<()> {
        let executor = &self.executor;
        if let Some(address) = &executor.address {
            if !is_ray_address(address) {
                let shown = format_args!("{address:?}");
                let expected = "expected auto, ray://HOST:PORT (Ray Client) or HOST:PORT (the \
                                head node's address printed by `ray start --head`)";
                return Err(self.invalid("executor.address", shown, expected));
            }
        }
        if let Some(namespace) = &executor.namespace {
            if namespace.trim().is_empty() || namespace.chars().any(char::is_control) {
                let shown = format_args!("{namespace:?}");
                let expected = "expected a non-empty name without control characters";
                return Err(self.invalid("executor.namespace", shown, expected));
            }
        }
        Ok(())
    }
}

/// Whether `address` is `auto`, `ray://HOST:PORT` or `HOST:PORT` (a port from 1 to 65535).
fn is_ray_address(address: &str) -> bool {
    if address == "auto" {
        return true;
    }
    let rest = address.strip_prefix("ray://").unwrap_or(address);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// A numeric key, its value, the range it accepts and what it is ("an integer").
type NumericLimit = (&'static str, u64, RangeInclusive<u64>, &'static str);

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
