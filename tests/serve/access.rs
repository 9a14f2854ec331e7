//! Who may call: the token, the loopback rule, cross-site requests, slow clients.

use crate::harness::Scratch;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[tokio::test]
async fn with_a_token_every_api_route_needs_it() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[("CEREBROS_SERVE_TOKEN", "s3cret-token")]);
    let anonymous = reqwest::Client::new();
    for path in [
        "/api/runs",
        "/api/health",
        "/api/events",
        "/api/runs/x",
        "/metrics",
    ] {
        let url = format!("{}{path}", server.url);
        let response = anonymous.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} without a token");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["ok"], false);
        for wrong in ["s3cret", "s3cret-token2", "S3CRET-TOKEN", ""] {
            let response = anonymous.get(&url).bearer_auth(wrong).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{path} with {wrong:?}");
        }
        let response = anonymous
            .get(&url)
            .header("authorization", "Basic czNjcmV0LXRva2Vu")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    let response = anonymous
        .post(format!("{}/api/runs", server.url))
        .header("content-type", "application/toml")
        .body(scratch.spec("no-token", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        401,
        "nothing is queued without the token"
    );
    // The page itself holds no data: it loads, then asks for the token.
    let page = anonymous.get(&server.url).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    // With the token (the harness sends it), everything answers.
    assert_eq!(
        server.get_json("/api/runs", 200).await["runs"],
        serde_json::json!([])
    );
    assert_eq!(server.get("/metrics").await.status().as_u16(), 200);
    assert_eq!(server.get("/api/health").await.status().as_u16(), 200);
}

#[test]
fn a_non_loopback_address_is_refused_without_a_token() {
    let scratch = Scratch::new();
    let output = scratch
        .command(&["serve", "--listen", "0.0.0.0:0", "--json"], &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a config error");
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["error"]["class"], "config");
    assert_eq!(error["error"]["details"]["key"], "serve.token");
    for bad in ["localhost", "127.0.0.1", "1.2.3.4:99999", ""] {
        let output = scratch
            .command(&["serve", "--listen", bad, "--json"], &[])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        let error: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(error["error"]["details"]["key"], "serve.listen", "{bad:?}");
    }
    let output = scratch
        .command(
            &["serve", "--json"],
            &[("CEREBROS_SERVE_TOKEN", "has space")],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("has space"),
        "the token is never echoed: {stdout}"
    );
}

#[tokio::test]
async fn cross_site_requests_and_foreign_hosts_are_refused() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let spec = scratch.spec("cross-site", 1);
    let response = server
        .http
        .post(format!("{}/api/runs", server.url))
        .header("content-type", "application/toml")
        .header("origin", "http://evil.example")
        .body(spec.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        403,
        "a page on another site may not submit"
    );
    let response = server
        .http
        .post(format!("{}/api/runs/x/cancel", server.url))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // DNS rebinding: another name pointed at 127.0.0.1.
    let response = server
        .http
        .get(format!("{}/api/runs", server.url))
        .header("host", "evil.example:8765")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // The page's own origin is fine; answers carry no CORS grant.
    let response = server
        .http
        .post(format!("{}/api/runs", server.url))
        .header("content-type", "application/toml")
        .header("origin", &server.url)
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/api/runs", server.url))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[test]
fn a_client_sending_headers_slowly_is_dropped_after_the_header_timeout() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path("slow.toml"),
        "[serve]\nheader_timeout_ms = 1000\n",
    )
    .unwrap();
    let config = scratch.path("slow.toml").display().to_string();
    let server = scratch.serve(&[("CEREBROS_CONFIG", &config)]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let request = b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed_after = None;
    for byte in request {
        if stream.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(_) => {
                // hyper answers 408 before it closes.
                closed_after = Some(started.elapsed());
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(150));
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let closed_after = closed_after.expect("the slow client was never dropped");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "dropped after {closed_after:?}, expected about 1 s"
    );
    // A normal client is still served.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async { server.get("/api/health").await.status() });
    assert_eq!(status.as_u16(), 200);
}

#[test]
fn a_server_whose_bridge_cannot_start_says_why_and_never_listens() {
    let scratch = Scratch::new();
    let output = scratch
        .command(
            &["serve", "--listen", "127.0.0.1:0", "--json"],
            &[("CEREBROS_MODULE", "no_such_service_module")],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "a missing dependency");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
    let error: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(error["error"]["class"], "dependency");
}

#[test]
fn a_body_announced_over_the_limit_is_refused_before_it_is_read() {
    // Announcing a huge body and sending two bytes held the connection for the 30 s
    // request deadline, then answered a 503 classed `contract`.
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let started = Instant::now();
    let request =
        b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                    Content-Length: 999999999\r\n\r\n{}";
    let answer = raw_answer(&server.url, request, "max_body_bytes");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"class\":\"contract\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// What the server answers `request` (raw bytes), read until it holds `until` or ends.
fn raw_answer(server_url: &str, request: &[u8], until: &str) -> String {
    let addr = server_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains(until) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line the server answers `request` (raw bytes) with.
fn raw_status(server_url: &str, request: &[u8]) -> String {
    let answer = raw_answer(server_url, request, "\r\n");
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn a_second_host_header_or_a_foreign_absolute_target_is_refused() {
    // Only the first Host was checked: `Host: 127.0.0.1` then `Host: evil.example` passed,
    // as did `GET http://evil.example/…` with a loopback Host.
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let two_hosts = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n";
    assert!(raw_status(&server.url, two_hosts).starts_with("HTTP/1.1 400"));
    let absolute = b"GET http://evil.example/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert!(raw_status(&server.url, absolute).starts_with("HTTP/1.1 403"));
    let own = b"GET http://127.0.0.1/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert!(raw_status(&server.url, own).starts_with("HTTP/1.1 200"));
}
