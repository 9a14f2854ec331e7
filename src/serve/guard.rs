//! Who may call the API (DESIGN §11): the bearer token, and two checks that keep a web
//! page on another site from using a server on this machine.
//!
//! * With `serve.token` set, every `/api` route and `/metrics` need
//!   `Authorization: Bearer TOKEN`, compared in constant time. The page and its assets
//!   are public: they hold no data.
//! * A request that changes something (any method but GET and HEAD) and carries an
//!   `Origin` other than the server's own is refused: no cross-site form or script may
//!   submit or cancel runs (CORS is off, so no other site can read answers either).
//! * On a loopback address, the `Host` must name a loopback host: a site that points
//!   its own name at 127.0.0.1 (DNS rebinding) is refused.

use crate::serve::api::error::ApiError;
use crate::serve::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The guard's settings.
#[derive(Clone)]
pub struct Guard {
    /// The token every protected route needs, if any.
    pub token: Option<String>,
    /// Whether the server listens on a loopback address only.
    pub loopback: bool,
}

/// Checks a request against the [`Guard`]; see the module doc.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let guard = &state.guard;
    let headers = request.headers();
    if headers.get_all(header::HOST).iter().count() > 1 {
        // RFC 9112 §3.2: a request with more than one Host is a bad request; which one a
        // proxy or this check would read is anyone's guess.
        return ApiError::request(StatusCode::BAD_REQUEST, "more than one Host header")
            .into_response();
    }
    // An absolute-form target (`GET http://host/…`) names the host the client asked for.
    let authority = request.uri().authority().map(|a| a.as_str());
    let named_loopback =
        host_is_loopback(headers) && authority.is_none_or(|a| is_loopback_name(host_name(a)));
    if guard.loopback && !named_loopback {
        return ApiError::request(
            StatusCode::FORBIDDEN,
            "the Host header must name this machine (localhost or a loopback address)",
        )
        .into_response();
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes && !same_origin(headers) {
        return ApiError::request(
            StatusCode::FORBIDDEN,
            "cross-site requests may not change anything: the Origin is not this server",
        )
        .into_response();
    }
    let path = request.uri().path();
    let protected = path.starts_with("/api/") || path == "/api" || path == "/metrics";
    if protected {
        if let Some(token) = &guard.token {
            if !bearer_matches(headers, token) {
                let mut response = ApiError::request(
                    StatusCode::UNAUTHORIZED,
                    "this server needs a token: send Authorization: Bearer <serve.token>",
                )
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        }
    }
    next.run(request).await
}

/// Whether `Authorization: Bearer <token>` carries `token` (constant time in the
/// token's content).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return false;
    }
    let given = value[scheme.len()..].trim_ascii();
    given.ct_eq(token.as_bytes()).into()
}

/// The host name of a `Host` or `Origin` authority (`name:port`, `[v6]:port`).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(name, _)| name)
}

fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: nothing names another site.
        return true;
    };
    is_loopback_name(host_name(host))
}

/// Whether a host name names this machine: `localhost` and its subdomains, or a
/// loopback address.
fn is_loopback_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request has no `Origin`, or one whose authority is the `Host` asked.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_tokens_match_exactly() {
        let ok = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert!(bearer_matches(&ok, "s3cret"));
        assert!(bearer_matches(
            &headers(&[(header::AUTHORIZATION, "bearer s3cret")]),
            "s3cret"
        ));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "Bearer ",
            "s3cret",
        ] {
            assert!(
                !bearer_matches(&headers(&[(header::AUTHORIZATION, wrong)]), "s3cret"),
                "{wrong}"
            );
        }
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn loopback_hosts_and_same_origins() {
        for host in ["127.0.0.1:8765", "localhost:1", "[::1]:80", "app.localhost"] {
            assert!(
                host_is_loopback(&headers(&[(header::HOST, host)])),
                "{host}"
            );
        }
        for host in [
            "evil.example:8765",
            "10.0.0.1:8765",
            "localhost.evil.example",
        ] {
            assert!(
                !host_is_loopback(&headers(&[(header::HOST, host)])),
                "{host}"
            );
        }
        let host = (header::HOST, "127.0.0.1:8765");
        assert!(same_origin(&headers(std::slice::from_ref(&host))));
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8765")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, (header::ORIGIN, "null")])));
    }
}
