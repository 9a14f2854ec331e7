//! The live run page (`GET /` and `GET /assets/{file}`): static files embedded in the
//! binary at build time, so the server needs no files beside it and no front-end
//! build step. The page reads the API like any client.

use crate::serve::api::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// A JavaScript module of the page, served at `/assets/<name>`.
macro_rules! script {
    ($name:literal) => {
        ($name, JAVASCRIPT, include_str!(concat!("page/", $name)))
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The page's files: name, media type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("page/app.css"),
    ),
    script!("app.js"),
    script!("api.js"),
    script!("architecture.js"),
    script!("charts.js"),
    script!("detail.js"),
    script!("dom.js"),
    script!("runs.js"),
    script!("sse.js"),
    script!("trials.js"),
];

const INDEX: &str = include_str!("page/index.html");

/// What the page may load: its own scripts and styles only.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'";

/// `GET /`.
pub async fn index() -> Response {
    with_headers(INDEX, "text/html; charset=utf-8")
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, media, content) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no asset {file:?}")))?;
    Ok(with_headers(content, media))
}

fn with_headers(content: &'static str, media: &'static str) -> Response {
    let mut response = content.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    #[test]
    fn every_file_of_the_page_is_served_and_every_import_resolves() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/serve/page");
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "index.html")
            .collect();
        files.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|(name, _, _)| name.to_string()).collect();
        served.sort();
        assert_eq!(
            files, served,
            "src/serve/page and ASSETS list the same files"
        );
        for (name, _, content) in ASSETS {
            for line in content
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let Some(target) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let target = target.trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|(asset, _, _)| *asset == target),
                    "{name} imports {target}, which is not served"
                );
            }
        }
    }
}
