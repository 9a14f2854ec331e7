//! The service under load (issue #11, "Performance"): a real `cerebros-bridge serve`
//! process trains a real run (`sklearn:digits`, parallelism 1) while this load generator
//! keeps 200 Server-Sent-Event clients connected and makes 200 API reads per second at a
//! fixed rate, and reports the figures next to the goals:
//!
//! * API reads (`GET /api/runs`, `/api/runs/{id}`, `/api/runs/{id}/trials/{tid}`,
//!   `/api/health` in turn), open-loop: each read is scheduled by the clock and its
//!   latency counts from the time it was due, so a slow server cannot slow the load down;
//! * event delay: for every `ml.run.trial` event each client receives, its receive wall
//!   time minus the event's stored `at` (RFC 3339, milliseconds, same machine's clock);
//! * the server's RSS (`VmRSS`) and thread count every second after the warm-up, and
//!   each thread group's time on a CPU and time waiting runnable for one
//!   (`/proc/PID/task/*/schedstat`): on 2 shared cores a latency tail is usually the
//!   server's threads waiting for a CPU, and this tells it apart from slow code;
//! * the run's trials before and during the load (the server must not starve training,
//!   nor training the server).
//!
//! `cargo bench --bench serve_load [-- --seconds N | --quick] [--json] [--clients N]
//! [--rate R] [--warmup N]`. Exits 1 when an event stream dropped or a request failed;
//! latency goals are reported, not asserted.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The goals of issue #11.
const GOAL_API_P99_MS: f64 = 50.0;
const GOAL_EVENT_P99_MS: f64 = 50.0;
const GOAL_RSS_SPREAD_MB: f64 = 10.0;
/// One event-stream client in this many follows one run (`/api/runs/{id}/events`); the
/// others follow every run (`/api/events`).
const RUN_STREAM_EVERY: usize = 10;
/// How long the server may take to listen (the interpreter and TensorFlow start first),
/// and the run to store its first trials.
const START_LIMIT: Duration = Duration::from_secs(120);
const TRIALS_LIMIT: Duration = Duration::from_secs(600);
/// A read that takes longer is an error.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The training run: enough trials that it trains through the whole measurement, one at
/// a time so that one core is left for the server.
const SPEC: &str = r#"
name = "serve-load"
dataset = "sklearn:digits"
objective = "val_accuracy"
direction = "maximize"
seed = 42

[dataset_options]
validation_split = 0.2

[search_space]
minimum_levels = 1
maximum_levels = 3
minimum_units_per_level = 1
maximum_units_per_level = 3
minimum_neurons_per_unit = 8
maximum_neurons_per_unit = 64
p_lateral_connection = 0.5
activation = ["relu", "elu"]
learning_rate = [0.001, 0.01]

[budget]
trials = 1000
epochs = 10
batch_size = 64
patience = 3
trial_timeout_ms = 120000
parallelism = 1
"#;

/// Command-line options (cargo's own `--bench` flag is ignored).
#[derive(Debug, Clone)]
struct Options {
    seconds: u64,
    warmup: u64,
    clients: usize,
    rate: u32,
    /// Trials the run stores before the load starts (their durations are the baseline).
    quiet_trials: usize,
    json: bool,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            seconds: 60,
            warmup: 10,
            clients: 200,
            rate: 200,
            quiet_trials: 4,
            json: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> u64 {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} takes a whole number"))
            };
            match arg.as_str() {
                "--quick" => {
                    options.seconds = 10;
                    options.warmup = 3;
                    options.quiet_trials = 2;
                }
                "--seconds" => options.seconds = number("--seconds").max(1),
                "--warmup" => options.warmup = number("--warmup"),
                "--clients" => options.clients = number("--clients") as usize,
                "--rate" => options.rate = number("--rate").max(1) as u32,
                "--json" => options.json = true,
                _ => {} // `--bench` from cargo, filters: not ours.
            }
        }
        options
    }
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(bench(&options));
    print_report(&report, &options);
    let failed = report["sse"]["dropped"].as_u64() != Some(0)
        || report["api"]["errors"].as_u64() != Some(0)
        || report["sse"]["connected_at_end"].as_u64() < Some(options.clients as u64);
    std::process::exit(i32::from(failed));
}

async fn bench(options: &Options) -> Value {
    let load_at_start = load_average();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::builder()
        .timeout(READ_TIMEOUT)
        .build()
        .unwrap();
    let run_id = submit(&http, &server.url).await;
    say(
        options,
        &format!(
            "run {run_id} queued; waiting for {} trials",
            options.quiet_trials
        ),
    );
    let trial_ids = wait_for_trials(&http, &server.url, &run_id, options.quiet_trials).await;

    // Event streams first, then the reads, then the measurement after the warm-up.
    let (stop_tx, stop) = watch::channel(false);
    let measuring = Arc::new(AtomicBool::new(false));
    // No overall timeout: the body of a stream never ends.
    let stream_http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let streams: Vec<_> = (0..options.clients)
        .map(|n| {
            let path = if n % RUN_STREAM_EVERY == RUN_STREAM_EVERY - 1 {
                format!("/api/runs/{run_id}/events")
            } else {
                "/api/events".to_owned()
            };
            tokio::spawn(follow(
                stream_http.clone(),
                format!("{}{path}", server.url),
                path == "/api/events",
                stop.clone(),
                measuring.clone(),
            ))
        })
        .collect();
    wait_for_streams(&http, &server.url, options.clients).await;
    say(
        options,
        &format!("{} event streams connected; warming up", options.clients),
    );

    let load_start = Utc::now();
    let reads = tokio::spawn(read_at_rate(
        http.clone(),
        server.url.clone(),
        run_id.clone(),
        trial_ids,
        options.rate,
        Duration::from_secs(options.warmup + options.seconds),
        Duration::from_secs(options.warmup),
    ));
    tokio::time::sleep(Duration::from_secs(options.warmup)).await;
    measuring.store(true, Ordering::SeqCst);
    let measure_start = Utc::now();
    let threads_before = thread_times(server.pid());
    let measure_clock = Instant::now();
    let rss = tokio::spawn(sample_rss(
        server.pid(),
        Duration::from_secs(options.seconds),
    ));
    say(options, &format!("measuring for {} s", options.seconds));
    let rss = rss.await.unwrap();
    let reads = reads.await.unwrap();
    measuring.store(false, Ordering::SeqCst);
    let threads = threads_report(
        &threads_before,
        &thread_times(server.pid()),
        measure_clock.elapsed(),
    );
    let health: Value = http
        .get(format!("{}/api/health", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connected_at_end = health["event_streams"].as_u64().unwrap_or(0);
    let run = run_document(&http, &server.url, &run_id).await;
    stop_tx.send(true).unwrap();
    let mut followed = Vec::new();
    for stream in streams {
        followed.push(stream.await.unwrap());
    }
    let _ = http
        .post(format!("{}/api/runs/{run_id}/cancel", server.url))
        .send()
        .await;
    drop(server);

    json!({
        "seconds": options.seconds,
        "warmup_s": options.warmup,
        "load_average_before": load_at_start,
        "load_average_after": load_average(),
        "api": reads.report(options),
        "sse": sse_report(&followed, connected_at_end),
        "rss_mb": rss_report(&rss),
        "server_threads": threads,
        "training": training_report(&run, load_start, measure_start),
    })
}

/// A `serve` child process in its own folder and store; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_cerebros-bridge"))
            .args(["serve", "--listen", "127.0.0.1:0", "--json"])
            .current_dir(dir)
            .env(
                "CEREBROS_STORE_URL",
                format!("sqlite://{}", dir.join("store.db").display()),
            )
            .env("CEREBROS_REPO", root.join("python"))
            .env("MLFLOW_TRACKING_URI", "off")
            .env_remove("CEREBROS_MODULE")
            .env_remove("CEREBROS_CONFIG")
            .env_remove("CEREBROS_SERVE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("serve.log")).unwrap(),
            ))
            .spawn()
            .expect("the server starts");
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
        match url {
            Some(url) => Server { child, url },
            None => {
                let _ = child.kill();
                panic!(
                    "serve did not start: {line:?}; log: {}",
                    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
                );
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn submit(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .post(format!("{url}/api/runs"))
        .header("content-type", "application/toml")
        .body(SPEC)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "POST /api/runs");
    let body: Value = response.json().await.unwrap();
    body["run_id"].as_str().unwrap().to_owned()
}

async fn run_document(http: &reqwest::Client, url: &str, run_id: &str) -> Value {
    http.get(format!("{url}/api/runs/{run_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the run stored `count` finished trials; returns their ids.
async fn wait_for_trials(
    http: &reqwest::Client,
    url: &str,
    run_id: &str,
    count: usize,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let run = run_document(http, url, run_id).await;
        let ids: Vec<String> = finished_trials(&run)
            .filter_map(|t| t["trial_id"].as_str().map(str::to_owned))
            .collect();
        if ids.len() >= count.max(1) {
            return ids;
        }
        let status = &run["run"]["status"];
        assert!(
            start.elapsed() < TRIALS_LIMIT && status != "failed",
            "run {run_id} is {status} with {} trials after {:?}",
            ids.len(),
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn finished_trials(run: &Value) -> impl Iterator<Item = &Value> {
    run["trials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["finished_at"].is_string())
}

/// Waits until the server counts `count` connected event streams.
async fn wait_for_streams(http: &reqwest::Client, url: &str, count: usize) {
    let start = Instant::now();
    loop {
        let health: Value = http
            .get(format!("{url}/api/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let connected = health["event_streams"].as_u64().unwrap_or(0);
        if connected >= count as u64 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {connected} of {count} event streams connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one event-stream client saw.
#[derive(Debug, Default)]
struct Followed {
    /// Events received (all kinds).
    events: u64,
    /// Receive time minus stored time of each `ml.run.trial` event while measuring, ms.
    delays_ms: Vec<f64>,
    /// Events whose id was not the previous one's + 1 (streams of all runs only).
    gaps: u64,
    /// Events whose id did not increase.
    out_of_order: u64,
    /// Why the stream ended before it was stopped.
    dropped: Option<String>,
}

/// One event-stream client: connects to `url` (with `http`, which must have no overall
/// timeout), reads events until `stop`.
async fn follow(
    http: reqwest::Client,
    url: String,
    all_runs: bool,
    mut stop: watch::Receiver<bool>,
    measuring: Arc<AtomicBool>,
) -> Followed {
    let mut followed = Followed::default();
    let mut response = match http.get(&url).send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            followed.dropped = Some(format!("HTTP {}", response.status()));
            return followed;
        }
        Err(err) => {
            followed.dropped = Some(format!("connect: {err}"));
            return followed;
        }
    };
    let mut buffer = String::new();
    let mut last_id: Option<i64> = None;
    loop {
        let chunk = tokio::select! {
            _ = stop.changed() => return followed,
            chunk = response.chunk() => chunk,
        };
        let received = Utc::now();
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                followed.dropped = Some("the server ended the stream".into());
                return followed;
            }
            Err(err) => {
                followed.dropped = Some(format!("read: {err}"));
                return followed;
            }
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let Some(event) = SseEvent::parse(&frame) else {
                continue; // a keep-alive comment
            };
            followed.events += 1;
            if let Some(last) = last_id {
                if event.id <= last {
                    followed.out_of_order += 1;
                } else if all_runs && event.id != last + 1 {
                    followed.gaps += 1;
                }
            }
            last_id = Some(event.id);
            if event.kind == "ml.run.trial" && measuring.load(Ordering::Relaxed) {
                if let Some(at) = event.stored_at() {
                    let delay = received.signed_duration_since(at);
                    followed
                        .delays_ms
                        .push(delay.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3);
                }
            }
        }
    }
}

/// One Server-Sent Event as the server sends it: `id`, `event` and JSON `data`.
struct SseEvent {
    id: i64,
    kind: String,
    data: String,
}

impl SseEvent {
    /// The event of a frame (`field: value` lines); `None` for a comment-only frame.
    fn parse(frame: &str) -> Option<SseEvent> {
        let (mut id, mut kind, mut data) = (None, String::new(), String::new());
        for line in frame.lines() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.parse().ok(),
                "event" => kind = value.to_owned(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
        Some(SseEvent {
            id: id?,
            kind,
            data,
        })
    }

    /// The event's stored time (`at` in its data).
    fn stored_at(&self) -> Option<DateTime<Utc>> {
        let data: Value = serde_json::from_str(&self.data).ok()?;
        let at = DateTime::parse_from_rfc3339(data["at"].as_str()?).ok()?;
        Some(at.with_timezone(&Utc))
    }
}

/// The API reads, in turn.
const READS: [&str; 4] = ["list", "show", "trial", "health"];

/// The measured reads.
struct Reads {
    /// Latency (from the time the read was due) of each measured read, by kind, ms.
    latencies_ms: Vec<(usize, f64)>,
    /// Measured reads that failed, and the first few reasons.
    errors: u64,
    error_samples: Vec<String>,
    /// The most a read started after it was due (the load generator's own lag), ms.
    max_start_lag_ms: f64,
    /// Wall time of the measurement.
    measured: Duration,
}

/// `rate` reads a second for `total`, each started when due whatever the previous
/// ones are doing; reads due in the first `warmup` are made but not counted.
async fn read_at_rate(
    http: reqwest::Client,
    url: String,
    run_id: String,
    trial_ids: Vec<String>,
    rate: u32,
    total: Duration,
    warmup: Duration,
) -> Reads {
    let count = (total.as_secs_f64() * f64::from(rate)) as u64;
    let start = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(count as usize);
    let mut max_start_lag = Duration::ZERO;
    for n in 0..count {
        let due = start + Duration::from_secs_f64(n as f64 / f64::from(rate));
        tokio::time::sleep_until(due).await;
        let lag = due.elapsed();
        let measured = due - start >= warmup;
        if measured {
            max_start_lag = max_start_lag.max(lag);
        }
        let kind = n as usize % READS.len();
        let path = match READS[kind] {
            "list" => "/api/runs".to_owned(),
            "show" => format!("/api/runs/{run_id}"),
            "trial" => {
                let trial = &trial_ids[(n as usize / READS.len()) % trial_ids.len()];
                format!("/api/runs/{run_id}/trials/{trial}")
            }
            _ => "/api/health".to_owned(),
        };
        let request = http.get(format!("{url}{path}"));
        pending.push(tokio::spawn(async move {
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => response
                    .bytes()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{path}: body: {e}")),
                Ok(response) => Err(format!("{path}: HTTP {}", response.status())),
                Err(err) => Err(format!("{path}: {err}")),
            };
            (measured, kind, due.elapsed(), outcome)
        }));
    }
    let mut reads = Reads {
        latencies_ms: Vec::new(),
        errors: 0,
        error_samples: Vec::new(),
        max_start_lag_ms: max_start_lag.as_secs_f64() * 1e3,
        measured: total.saturating_sub(warmup),
    };
    for read in pending {
        let (measured, kind, latency, outcome) = read.await.unwrap();
        match outcome {
            // Errors count during the warm-up too: none is allowed.
            Err(err) => {
                reads.errors += 1;
                if reads.error_samples.len() < 5 {
                    reads.error_samples.push(err);
                }
            }
            Ok(()) if measured => reads.latencies_ms.push((kind, latency.as_secs_f64() * 1e3)),
            Ok(()) => {}
        }
    }
    reads
}

impl Reads {
    fn report(&self, options: &Options) -> Value {
        let all: Vec<f64> = self.latencies_ms.iter().map(|(_, ms)| *ms).collect();
        let by_kind: serde_json::Map<String, Value> = READS
            .iter()
            .enumerate()
            .map(|(kind, name)| {
                let own: Vec<f64> = self
                    .latencies_ms
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, ms)| *ms)
                    .collect();
                ((*name).to_owned(), percentiles(own))
            })
            .collect();
        json!({
            "target_per_s": options.rate,
            "reads_per_s": self.latencies_ms.len() as f64 / self.measured.as_secs_f64(),
            "reads": self.latencies_ms.len(),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "latency_ms": percentiles(all),
            "latency_ms_by_read": by_kind,
            "max_start_lag_ms": round(self.max_start_lag_ms),
        })
    }
}

fn sse_report(followed: &[Followed], connected_at_end: u64) -> Value {
    let delays: Vec<f64> = followed
        .iter()
        .flat_map(|f| f.delays_ms.iter().copied())
        .collect();
    let events: Vec<u64> = followed.iter().map(|f| f.events).collect();
    let dropped: Vec<&String> = followed.iter().filter_map(|f| f.dropped.as_ref()).collect();
    json!({
        "clients": followed.len(),
        "connected_at_end": connected_at_end,
        "dropped": dropped.len(),
        "dropped_samples": dropped.iter().take(5).collect::<Vec<_>>(),
        "events_per_client_min": events.iter().min(),
        "events_per_client_max": events.iter().max(),
        "id_gaps": followed.iter().map(|f| f.gaps).sum::<u64>(),
        "out_of_order": followed.iter().map(|f| f.out_of_order).sum::<u64>(),
        "trial_event_deliveries": delays.len(),
        "delay_ms": percentiles(delays),
    })
}

/// The server's memory and threads, sampled.
struct Sample {
    /// `VmRSS`, MB.
    rss_mb: f64,
    /// `Threads`.
    threads: u64,
}

/// Samples the server's `/proc/PID/status` every second for `period`.
async fn sample_rss(pid: u32, period: Duration) -> Vec<Sample> {
    let mut samples = Vec::new();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while start.elapsed() <= period {
        tick.tick().await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        if let (Some(kb), Some(threads)) = (field("VmRSS:"), field("Threads:")) {
            samples.push(Sample {
                rss_mb: kb as f64 / 1024.0,
                threads,
            });
        }
    }
    samples
}

fn rss_report(samples: &[Sample]) -> Value {
    let rss = samples.iter().map(|s| s.rss_mb);
    let min = rss.clone().fold(f64::INFINITY, f64::min);
    let max = rss.fold(0.0, f64::max);
    json!({
        "samples": samples.len(),
        "first": samples.first().map(|s| round(s.rss_mb)),
        "last": samples.last().map(|s| round(s.rss_mb)),
        "min": round(min),
        "max": round(max),
        "spread": round(max - min),
        "threads_first": samples.first().map(|s| s.threads),
        "threads_max": samples.iter().map(|s| s.threads).max(),
    })
}

/// Each server thread's name, time on a CPU and time waiting for one (ns), by id,
/// from `/proc/PID/task/TID/schedstat`.
fn thread_times(pid: u32) -> BTreeMap<String, (String, u64, u64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut fields = stat
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let (Some(on_cpu), Some(waiting)) = (fields.next(), fields.next()) else {
            continue;
        };
        let id = task.file_name().to_string_lossy().into_owned();
        threads.insert(id, (name.trim().to_owned(), on_cpu, waiting));
    }
    threads
}

/// Per thread name: the share of one core each group of threads ran, and waited
/// runnable for a CPU, between two [`thread_times`] (threads of both samples only).
fn threads_report(
    before: &BTreeMap<String, (String, u64, u64)>,
    after: &BTreeMap<String, (String, u64, u64)>,
    wall: Duration,
) -> Value {
    let mut groups: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (id, (name, on_cpu, waiting)) in after {
        if let Some((_, on_cpu_before, waiting_before)) = before.get(id) {
            let group = groups.entry(name.as_str()).or_default();
            group.0 += on_cpu - on_cpu_before;
            group.1 += waiting - waiting_before;
        }
    }
    let wall_ns = wall.as_nanos() as f64;
    groups
        .into_iter()
        .filter(|(_, (on_cpu, _))| *on_cpu > 0)
        .map(|(name, (on_cpu, waiting))| {
            let cpu = round(on_cpu as f64 * 100.0 / wall_ns);
            let wait = round(waiting as f64 * 100.0 / wall_ns);
            (
                name.to_owned(),
                json!({"cpu_pct": cpu, "runqueue_wait_pct": wait}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Trials finished before the load (less the first, which pays TensorFlow's start-up)
/// and during the measurement, with their median duration.
fn training_report(run: &Value, load_start: DateTime<Utc>, measure_start: DateTime<Utc>) -> Value {
    let finished = |trial: &Value| {
        trial["finished_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let durations = |keep: &dyn Fn(&Value, DateTime<Utc>) -> bool| -> Vec<f64> {
        finished_trials(run)
            .filter(|t| finished(t).is_some_and(|at| keep(t, at)))
            .filter_map(|t| t["duration_ms"].as_f64())
            .collect()
    };
    let before = durations(&|t, at| at < load_start && t["index"] != 0);
    let during = durations(&|_, at| at >= measure_start);
    let failed = finished_trials(run)
        .filter(|t| t["status"] == "failed")
        .count();
    json!({
        "run_status": run["run"]["status"],
        "trials_finished": finished_trials(run).count(),
        "trials_failed": failed,
        "before_load": {"trials": before.len(), "median_duration_ms": percentiles(before)["p50"]},
        "during_measurement": {"trials": during.len(), "median_duration_ms": percentiles(during)["p50"]},
    })
}

/// p50, p99 and max of `values` (nulls when empty).
fn percentiles(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return json!({"n": 0, "p50": null, "p99": null, "max": null});
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| round(values[((values.len() - 1) as f64 * q).round() as usize]);
    json!({"n": values.len(), "p50": at(0.50), "p99": at(0.99), "max": at(1.0)})
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Progress on stderr, unless the report is JSON-only.
fn say(options: &Options, line: &str) {
    if !options.json {
        eprintln!("serve_load: {line}");
    }
}

fn print_report(report: &Value, options: &Options) {
    if options.json {
        println!("{report}");
        return;
    }
    let api = &report["api"];
    let sse = &report["sse"];
    let rss = &report["rss_mb"];
    let training = &report["training"];
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    let below = |value: &Value, goal: f64| value.as_f64().is_some_and(|v| v < goal);
    println!(
        "\nThe service under load: {} s after a {} s warm-up (load average {} before, {} after)",
        report["seconds"],
        report["warmup_s"],
        report["load_average_before"],
        report["load_average_after"]
    );
    println!("{:<34} {:>28}  {:<26} ", "", "measured", "goal");
    let rows = [
        (
            "API reads/s".to_owned(),
            format!("{:.1}", api["reads_per_s"].as_f64().unwrap_or(0.0)),
            format!("{}", api["target_per_s"]),
            api["reads_per_s"].as_f64().unwrap_or(0.0)
                >= 0.99 * api["target_per_s"].as_f64().unwrap_or(0.0),
        ),
        (
            "API errors".to_owned(),
            format!("{}", api["errors"]),
            "0".to_owned(),
            api["errors"] == 0,
        ),
        (
            "API latency p50 / p99 / max (ms)".to_owned(),
            triple(&api["latency_ms"]),
            format!("p99 < {GOAL_API_P99_MS}"),
            below(&api["latency_ms"]["p99"], GOAL_API_P99_MS),
        ),
        (
            "SSE clients connected at the end".to_owned(),
            format!("{}", sse["connected_at_end"]),
            format!("{}", sse["clients"]),
            sse["connected_at_end"].as_u64() >= sse["clients"].as_u64(),
        ),
        (
            "SSE streams dropped".to_owned(),
            format!("{}", sse["dropped"]),
            "0".to_owned(),
            sse["dropped"] == 0,
        ),
        (
            "event delay p50 / p99 / max (ms)".to_owned(),
            triple(&sse["delay_ms"]),
            format!("p99 < {GOAL_EVENT_P99_MS}"),
            below(&sse["delay_ms"]["p99"], GOAL_EVENT_P99_MS),
        ),
        (
            "RSS first / last / min / max (MB)".to_owned(),
            format!(
                "{} / {} / {} / {}",
                rss["first"], rss["last"], rss["min"], rss["max"]
            ),
            format!("max - min <= {GOAL_RSS_SPREAD_MB}"),
            rss["spread"]
                .as_f64()
                .is_some_and(|s| s <= GOAL_RSS_SPREAD_MB),
        ),
    ];
    for (name, measured, goal, ok) in rows {
        println!("{name:<34} {measured:>28}  {goal:<26} {}", mark(ok));
    }
    println!("API latency by read (p50 / p99 / max ms):");
    for read in READS {
        println!("  {read:<8} {}", triple(&api["latency_ms_by_read"][read]));
    }
    println!(
        "server threads: {} at the start of the measurement, {} at most",
        rss["threads_first"], rss["threads_max"]
    );
    println!("server threads during the measurement (% of one core: on a CPU / waiting for one):");
    for (name, times) in report["server_threads"].as_object().into_iter().flatten() {
        println!(
            "  {name:<18} {:>7} / {:>7}",
            times["cpu_pct"], times["runqueue_wait_pct"]
        );
    }
    println!(
        "load generator start lag (max): {} ms; trial-event deliveries: {}; events per client: {}..{}; id gaps: {}; out of order: {}",
        api["max_start_lag_ms"],
        sse["trial_event_deliveries"],
        sse["events_per_client_min"],
        sse["events_per_client_max"],
        sse["id_gaps"],
        sse["out_of_order"]
    );
    println!(
        "training: run {}, {} trials finished ({} failed); median trial {} ms over {} trials before the load, {} ms over {} trials during the measurement",
        training["run_status"],
        training["trials_finished"],
        training["trials_failed"],
        training["before_load"]["median_duration_ms"],
        training["before_load"]["trials"],
        training["during_measurement"]["median_duration_ms"],
        training["during_measurement"]["trials"],
    );
    for sample in api["error_samples"].as_array().into_iter().flatten() {
        println!("error: {sample}");
    }
    for sample in sse["dropped_samples"].as_array().into_iter().flatten() {
        println!("dropped: {sample}");
    }
}

fn triple(p: &Value) -> String {
    format!("{} / {} / {}", p["p50"], p["p99"], p["max"])
}
