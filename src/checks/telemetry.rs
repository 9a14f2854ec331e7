//! `telemetry`: where spans go, and whether the collector accepts connections. An
//! unreachable collector is a warning: runs go on and their spans are dropped.

use super::Check;
use crate::core::config::{CollectorAddress, Config};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the collector has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `telemetry` check.
pub(super) fn check_telemetry(config: &Config) -> Check {
    let telemetry = &config.telemetry;
    let Some(endpoint) = telemetry.otlp_endpoint.as_deref() else {
        return Check::ok(
            "telemetry",
            "off (telemetry.otlp_endpoint unset: no spans exported)",
        );
    };
    let exporting = format!(
        "{endpoint} ({}, service {})",
        telemetry.otlp_protocol.as_str(),
        telemetry.service_name
    );
    let hint = "start the collector, or fix telemetry.otlp_endpoint \
                (OTEL_EXPORTER_OTLP_ENDPOINT); runs go on meanwhile and their spans are dropped";
    // The config check already refused a malformed endpoint.
    let Ok(address) = CollectorAddress::parse(endpoint) else {
        return Check::warn("telemetry", exporting, hint);
    };
    match connect(&address) {
        Ok(()) => Check::ok("telemetry", format!("exporting to {exporting}")),
        Err(why) => Check::warn("telemetry", format!("{exporting}: {why}"), hint),
    }
}

fn connect(address: &CollectorAddress) -> Result<(), String> {
    let addrs = (address.host.as_str(), address.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {}: {err}", address.host))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(err) => last = format!("cannot connect to {addr}: {err}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    fn with_endpoint(endpoint: Option<String>) -> Check {
        let mut config = Config::default();
        config.telemetry.otlp_endpoint = endpoint;
        check_telemetry(&config)
    }

    #[test]
    fn off_listening_and_unreachable_collectors() {
        let off = with_endpoint(None);
        assert_eq!(off.status, Status::Ok);
        assert!(off.detail.starts_with("off"), "{off}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listening = with_endpoint(Some(url.clone()));
        assert_eq!(listening.status, Status::Ok, "{listening}");
        assert!(listening.detail.contains(&url), "{listening}");

        drop(listener);
        let gone = with_endpoint(Some(url));
        assert_eq!(gone.status, Status::Warn, "{gone}");
        assert!(gone.detail.contains("cannot connect"), "{gone}");
        assert!(gone.hint.unwrap().contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }
}
