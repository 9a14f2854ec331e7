//! A real `cerebros-bridge serve` process on an ephemeral loopback port, in a scratch
//! folder with its own store, over `tests/fixtures/nas_fixture.py` (the real NAS ops,
//! with knobs to slow trials down and a log of every trial start).

use crate::common;
use reqwest::{Client, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start listening (the interpreter starts first).
const START_LIMIT: Duration = Duration::from_secs(60);

/// A scratch folder: the server's working directory, its store and the trial log.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// An empty scratch folder.
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CLI in this folder, on this folder's store.
    pub fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env(
                "CEREBROS_STORE_URL",
                format!("sqlite://{}", self.path("store.db").display()),
            )
            .env("CEREBROS_MODULE", "nas_fixture")
            .env("CEREBROS_REPO", common::root().join("tests/fixtures"))
            .env("MLFLOW_TRACKING_URI", "off")
            .env("NAS_FIXTURE_LOG", self.path("trials.log"))
            .env_remove("NAS_FIXTURE_SLEEP")
            .env_remove("NAS_FIXTURE_FAIL_INDEX")
            .env_remove("CEREBROS_SERVE_TOKEN")
            .env_remove("CEREBROS_CONFIG")
            .stdin(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        command
    }

    /// Starts `serve --listen 127.0.0.1:0 --json` with `envs` and waits until it listens.
    pub fn serve(&self, envs: &[(&str, &str)]) -> Served {
        let mut child = self
            .command(&["serve", "--listen", "127.0.0.1:0", "--json"], envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path("serve.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        let url = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["listening"].as_str().map(str::to_owned));
        let Some(url) = url else {
            let _ = child.kill();
            panic!(
                "serve did not start: {line:?}; log: {}",
                std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
            );
        };
        Served {
            child,
            url,
            http: Client::new(),
            token: envs
                .iter()
                .find(|(k, _)| *k == "CEREBROS_SERVE_TOKEN")
                .map(|(_, v)| v.to_string()),
        }
    }

    /// Writes a spec file of `trials` iris trials and returns its text.
    pub fn spec(&self, name: &str, trials: u32) -> String {
        let text = common::iris_spec(name, trials, 4);
        std::fs::write(self.path(&format!("{name}.toml")), &text).unwrap();
        text
    }

    /// How often each trial id started, from the fixture's log.
    pub fn starts(&self) -> std::collections::BTreeMap<String, usize> {
        let log = std::fs::read_to_string(self.path("trials.log")).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in log.lines() {
            *counts.entry(line.to_owned()).or_insert(0) += 1;
        }
        counts
    }
}

/// A running server; killed when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The HTTP client.
    pub http: Client,
    token: Option<String>,
}

impl Served {
    /// `GET path` (with the token, if the server has one).
    pub async fn get(&self, path: &str) -> Response {
        self.authorized(self.http.get(format!("{}{path}", self.url)))
            .send()
            .await
            .unwrap()
    }

    /// `GET path` as JSON, asserting the status.
    pub async fn get_json(&self, path: &str, status: u16) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status().as_u16(), status, "GET {path}");
        response.json().await.unwrap()
    }

    /// `POST path` with `body` of `content_type`.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.authorized(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", content_type)
                .body(body),
        )
        .send()
        .await
        .unwrap()
    }

    /// Submits a TOML spec; returns the new run id.
    pub async fn submit(&self, spec: &str) -> String {
        let response = self
            .post("/api/runs", "application/toml", spec.to_owned())
            .await;
        assert_eq!(response.status().as_u16(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "queued");
        body["run_id"].as_str().unwrap().to_owned()
    }

    /// The run document of `run_id`.
    pub async fn run(&self, run_id: &str) -> Value {
        self.get_json(&format!("/api/runs/{run_id}"), 200).await
    }

    /// Waits until `run_id` is in one of `states`; returns its document. Fails at once,
    /// with the run's error, when it ends in another state.
    pub async fn wait_for_status(&self, run_id: &str, states: &[&str], limit: Duration) -> Value {
        const ENDED: [&str; 3] = ["succeeded", "failed", "cancelled"];
        let start = Instant::now();
        loop {
            let doc = self.run(run_id).await;
            let status = doc["run"]["status"].as_str().unwrap_or("").to_owned();
            if states.contains(&status.as_str()) {
                return doc;
            }
            let ended = ENDED.contains(&status.as_str());
            assert!(
                !ended && start.elapsed() < limit,
                "run {run_id} is {status}, not {states:?}, after {:?}; error: {}; trial errors: {}",
                start.elapsed(),
                doc["run"]["error"],
                doc["trials"]
                    .as_array()
                    .map(|trials| trials
                        .iter()
                        .filter_map(|t| t["error"]["message"].as_str())
                        .collect::<Vec<_>>()
                        .join(" | "))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM; returns the exit code and how long the process took to exit (SIGKILL
    /// after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                self.kill();
                return (None, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The number of the server's threads.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|tasks| tasks.count())
            .unwrap_or(0)
    }

    /// The nice value of each of the server's threads whose name starts with `prefix`.
    pub fn thread_nices(&self, prefix: &str) -> Vec<i64> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut nices = Vec::new();
        for task in std::fs::read_dir(tasks).unwrap().flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if !stat[open + 1..close].starts_with(prefix) {
                continue;
            }
            // Field 19 (nice) is the 17th after the name.
            if let Some(nice) = stat[close + 2..].split_whitespace().nth(16) {
                nices.push(nice.parse().unwrap());
            }
        }
        nices
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:`.
    pub id: i64,
    /// `event:`.
    pub kind: String,
    /// `data:`, as JSON.
    pub data: Value,
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    /// Reads the events of `response` (asserting it is an event stream).
    pub fn new(response: Response) -> SseReader {
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        SseReader {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when none comes within `limit` or the stream ends.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Some(SseEvent {
                        id,
                        kind,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
                continue; // a comment (keep-alive)
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.ok()?).unwrap());
        }
    }
}
