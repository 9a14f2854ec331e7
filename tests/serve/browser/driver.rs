//! Headless Chromium through chromedriver (WebDriver over plain HTTP on loopback): the
//! driver process (killed with its browsers when dropped), one browser session per screen,
//! scripts evaluated in the page, polling waits and the browser's console log.

use base64::Engine;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's `chromium` package.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver` package.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How often a wait reads the page again.
const POLL: Duration = Duration::from_millis(100);

/// A chromedriver process on a free loopback port, in its own process group (with the
/// browsers it starts): the whole group is killed when this is dropped, also when a test
/// fails half-way.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver; fails with a clear message when Chromium or chromedriver is
    /// missing.
    pub fn start() -> Driver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the browser test needs Debian's `chromium` and \
                 `chromium-driver` packages (`make test` installs them)"
            );
        }
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // chromedriver prints "... started successfully on port N." once it listens; the
        // thread then drains its output until it exits.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut printed = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                printed.push_str(&line);
                printed.push('\n');
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(Ok(port.trim_end_matches('.').to_owned()));
                }
            }
            let _ = tx.send(Err(printed));
        });
        let mut driver = Driver {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(START_LIMIT) {
            Ok(Ok(port)) => driver.url = format!("http://127.0.0.1:{port}"),
            other => panic!("chromedriver did not start within {START_LIMIT:?}: {other:?}"),
        }
        driver
    }

    /// A new headless browser session showing `screen`.
    pub async fn session(&self, screen: Screen) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({ "binary": CHROMIUM });
        match screen {
            Screen::Laptop { width, height } => {
                args.push(format!("--window-size={width},{height}"))
            }
            Screen::Phone { width, height } => {
                // Headless windows stay at least ~500 px wide: emulate the phone instead.
                args.push("--window-size=1280,900".to_owned());
                options["mobileEmulation"] = json!({
                    "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0, "mobile": true, "touch": true },
                });
            }
        }
        options["args"] = json!(args);
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session starts through chromedriver");
        let session_id = client.session_id().await.unwrap().expect("a session id");
        Browser {
            client,
            session_url: format!("{}/session/{session_id}", self.url),
            console: Vec::new(),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group of the chromedriver we started (its id is the group's): the driver and
        // every browser it launched.
        let group = self.child.id() as libc::pid_t;
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The screen a session shows the page on (CSS pixels).
#[derive(Debug, Clone, Copy)]
pub enum Screen {
    /// A desktop window.
    Laptop { width: u32, height: u32 },
    /// A phone, emulated by Chromium (touch, device pixel ratio 2).
    Phone { width: u32, height: u32 },
}

/// One browser session.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    /// The session's chromedriver URL, for the routes fantoccini does not know.
    session_url: String,
    /// The console entries read so far (chromedriver hands each out once).
    console: Vec<ConsoleEntry>,
    _profile: tempfile::TempDir,
}

/// One entry of the browser's console log.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConsoleEntry {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// `javascript`, `network`, `console-api`, ...
    #[serde(default)]
    pub source: String,
    /// The text, with the URL and position of its origin.
    pub message: String,
}

impl Browser {
    /// The value of `script` (a function body that `return`s JSON) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("the page could not run a script: {e}"))
    }

    /// Polls `read` (a script, as for `eval`) until `done` holds for its value, for up to
    /// `limit`; panics with `what` and the last value otherwise.
    pub async fn wait_for(
        &self,
        read: &str,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let value = self.eval(read).await;
            if done(&value) {
                return value;
            }
            assert!(
                start.elapsed() < limit,
                "the page did not show {what} within {limit:?}; it shows: {value:#}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes a PNG of the viewport to `path` (creating its folder).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Writes a PNG of the whole page, beyond the viewport, to `path` (creating its folder).
    pub async fn full_page_screenshot(&self, path: &Path) {
        let metrics = self.devtools("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let clip =
            json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        let params = json!({ "format": "png", "captureBeyondViewport": true, "clip": clip });
        let shot = self.devtools("Page.captureScreenshot", params).await;
        let data = shot["data"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot from Page.captureScreenshot: {shot}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The result of the DevTools command `command`, through chromedriver's route for them.
    async fn devtools(&self, command: &str, params: Value) -> Value {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/goog/cdp/execute", self.session_url))
            .json(&json!({ "cmd": command, "params": params }))
            .send()
            .await
            .expect("chromedriver answers the DevTools route")
            .json()
            .await
            .unwrap();
        body["value"].clone()
    }

    /// Every console entry since the session started.
    pub async fn console(&mut self) -> &[ConsoleEntry] {
        // chromedriver still serves the legacy log route.
        let response = reqwest::Client::new()
            .post(format!("{}/se/log", self.session_url))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("chromedriver answers the log route");
        let body: Value = response.json().await.unwrap();
        let entries: Vec<ConsoleEntry> = serde_json::from_value(body["value"].clone())
            .unwrap_or_else(|e| {
                panic!("chromedriver's browser log is not a list of entries ({e}): {body}")
            });
        self.console.extend(entries);
        &self.console
    }

    /// Ends the session (Chromium exits).
    pub async fn close(self) {
        self.client.close().await.expect("the session ends");
    }
}
