//! The address in `telemetry.otlp_endpoint`: a plain `http://` URL with a host (TLS is
//! not built in).

/// The host and port a collector URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorAddress {
    /// The host name or IP address (an IPv6 literal without its brackets).
    pub host: String,
    /// The port (80 when the URL names none, as for any `http://` URL).
    pub port: u16,
}

impl CollectorAddress {
    /// The address of `endpoint`, or why it is not a URL this build can send spans to.
    ///
    /// ```
    /// use cerebros_bridge::core::config::CollectorAddress;
    /// let address = CollectorAddress::parse("http://[::1]:4318/v1/traces").unwrap();
    /// assert_eq!((address.host.as_str(), address.port), ("::1", 4318));
    /// assert_eq!(CollectorAddress::parse("http://collector").unwrap().port, 80);
    /// assert!(CollectorAddress::parse("https://collector:4318").is_err());
    /// ```
    pub fn parse(endpoint: &str) -> Result<CollectorAddress, &'static str> {
        if endpoint.starts_with("https://") {
            return Err(
                "TLS is not built in: expected an http:// URL (a collector or agent on this \
                 host or network, e.g. http://127.0.0.1:4318)",
            );
        }
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return Err("expected an http:// URL such as http://127.0.0.1:4318");
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: [::1]:4318
            Some(literal) => match literal.split_once(']') {
                Some((host, rest)) if rest.is_empty() || rest.starts_with(':') => {
                    (host, rest.strip_prefix(':'))
                }
                _ => ("", None),
            },
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => Some(80),
            Some(port) => port.parse::<u16>().ok(),
        };
        match port {
            Some(port) if !host.is_empty() && !authority.contains(char::is_whitespace) => {
                Ok(CollectorAddress {
                    host: host.to_owned(),
                    port,
                })
            }
            _ => Err(
                "expected an http:// URL with a host and an optional port, such as \
                      http://127.0.0.1:4318",
            ),
        }
    }
}
