//! The REST routes: the CLI's documents, and every error status.

use crate::harness::Scratch;
use serde_json::Value;
use std::time::Duration;

const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The CLI's `--json` output in the same folder.
fn cli_json(scratch: &Scratch, args: &[&str]) -> (i32, Value) {
    let output = scratch.command(args, &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_routes_answer_the_cli_documents() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let toml_spec = scratch.spec("from-toml", 3);
    let run_id = server.submit(&toml_spec).await;
    let json_spec = serde_json::json!({
        "name": "from-json", "dataset": "sklearn:iris", "seed": 3,
        "search_space": {"maximum_levels": 1, "maximum_units_per_level": 1},
        "budget": {"trials": 2, "epochs": 2, "parallelism": 1},
    });
    let response = server
        .post(
            "/api/runs",
            "application/json; charset=utf-8",
            json_spec.to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 202);
    let second: Value = response.json().await.unwrap();
    let second_id = second["run_id"].as_str().unwrap().to_owned();

    let done = server
        .wait_for_status(&run_id, &["succeeded"], RUN_LIMIT)
        .await;
    server
        .wait_for_status(&second_id, &["succeeded"], RUN_LIMIT)
        .await;
    let (code, shown) = cli_json(&scratch, &["runs", "show", &run_id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(done, shown, "GET /api/runs/{{id}} is `runs show --json`");
    assert_eq!(done["trials"].as_array().unwrap().len(), 3);

    let listed = server.get_json("/api/runs", 200).await;
    let (_, cli_list) = cli_json(&scratch, &["runs", "list", "--json"]);
    assert_eq!(
        listed["runs"], cli_list["runs"],
        "GET /api/runs is `runs list --json`"
    );
    assert_eq!(listed["next_cursor"], Value::Null);
    assert_eq!(listed["runs"][0]["name"], "from-json", "newest first");

    let trial = &done["trials"][1];
    let trial_id = trial["trial_id"].as_str().unwrap();
    let one = server
        .get_json(&format!("/api/runs/{run_id}/trials/{trial_id}"), 200)
        .await;
    assert_eq!(&one["trial"], trial);
    let curves = one["curves"].as_object().unwrap();
    assert!(curves["val_accuracy"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
    assert_eq!(one["curves"], trial["metrics"]["curve"]);

    let page = server.get("/").await;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let script = server.get("/assets/app.js").await;
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    let health = server.get_json("/api/health", 200).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["bridge"]["workers"]["workers_alive"], 2);
    assert!(health["mlflow_outbox"]["pending"].as_u64().unwrap() >= 5);
}

#[tokio::test]
async fn pages_of_runs_follow_the_cursor_and_filter_by_status() {
    let scratch = Scratch::new();
    scratch.spec("paged", 1);
    let path = scratch.path("paged.toml").display().to_string();
    let mut submitted = Vec::new();
    for _ in 0..5 {
        let (code, queued) = cli_json(&scratch, &["runs", "submit", &path, "--json"]);
        assert_eq!(code, 0);
        submitted.push(queued["run_id"].as_str().unwrap().to_owned());
    }
    // The store's pages, before any server takes a run from the queue.
    let store = cerebros_bridge::nas::store::Store::open(&scratch.path("store.db")).unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .runs_page(
                Some(cerebros_bridge::nas::store::RunState::Queued),
                2,
                cursor,
            )
            .unwrap();
        seen.extend(page.runs.iter().map(|r| r.run_id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    submitted.reverse();
    assert_eq!(seen, submitted, "newest first, each once");

    let server = scratch.serve(&[("NAS_FIXTURE_SLEEP", "30")]);
    let mut seen = Vec::new();
    let mut query = "/api/runs?limit=2".to_owned();
    loop {
        let page = server.get_json(&query, 200).await;
        let runs = page["runs"].as_array().unwrap();
        assert!(runs.len() <= 2);
        seen.extend(
            runs.iter()
                .map(|r| r["run_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => query = format!("/api/runs?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, submitted);
    // One run is being driven (its trials sleep); the other four wait.
    let oldest = submitted.last().unwrap();
    server
        .wait_for_status(oldest, &["running"], RUN_LIMIT)
        .await;
    let queued = server.get_json("/api/runs?status=queued", 200).await;
    assert_eq!(queued["runs"].as_array().unwrap().len(), 4);
    let running = server
        .get_json("/api/runs?status=running&limit=10", 200)
        .await;
    assert_eq!(running["runs"][0]["run_id"], oldest.as_str());

    for (query, key) in [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=x", "limit"),
        ("cursor=-3", "cursor"),
        ("cursor=abc", "cursor"),
        ("status=queued&status=failed", "status"),
    ] {
        let error = server.get_json(&format!("/api/runs?{query}"), 400).await;
        assert_eq!(error["ok"], false);
        assert_eq!(error["error"]["details"]["key"], key, "{query}");
    }
}

#[tokio::test]
async fn a_bad_spec_is_400_with_the_message_and_key_that_run_gives() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let cases = [
        (
            "unknown-key",
            "name = \"x\"\ndataset = \"sklearn:iris\"\nbogus = 1\n",
        ),
        (
            "bad-budget",
            "name = \"x\"\ndataset = \"sklearn:iris\"\n[budget]\ntrials = 0\n",
        ),
        ("bad-dataset", "name = \"x\"\ndataset = \"sklearn:nope\"\n"),
        ("malformed", "name = \"x\ndataset = \n"),
        ("outside", "name = \"x\"\ndataset = \"csv:/etc/passwd\"\n"),
    ];
    for (name, text) in cases {
        let file = scratch.path(&format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let response = server.post("/api/runs", "application/toml", text).await;
        assert_eq!(response.status().as_u16(), 400, "{name}");
        let api: Value = response.json().await.unwrap();
        let (code, cli) = cli_json(&scratch, &["run", file.to_str().unwrap(), "--json"]);
        if name == "outside" {
            // The CLI reads any file its user can; the server only files in its folder.
            assert_eq!(api["error"]["details"]["key"], "dataset");
            assert!(api["error"]["message"].as_str().unwrap().contains("inside"));
            continue;
        }
        assert_eq!(code, 2, "{name}");
        assert_eq!(api["error"]["class"], "contract");
        assert_eq!(
            api["error"]["details"]["key"], cli["error"]["details"]["key"],
            "{name}"
        );
        let cli_message = cli["error"]["message"].as_str().unwrap();
        let api_message = api["error"]["message"].as_str().unwrap();
        assert!(
            cli_message.ends_with(api_message),
            "{name}: {cli_message:?} vs {api_message:?}"
        );
    }
    for (content_type, body, status) in [
        ("application/json", "{not json", 400),
        ("application/json", "[1, 2]", 400),
        (
            "application/json",
            "{\"name\": \"x\", \"dataset\": \"sklearn:iris\", \"x\": 1}",
            400,
        ),
        ("text/plain", "name = \"x\"", 415),
        ("application/x-www-form-urlencoded", "a=b", 415),
    ] {
        let response = server.post("/api/runs", content_type, body).await;
        assert_eq!(response.status().as_u16(), status, "{content_type} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["ok"], false);
    }
    let response = server
        .post("/api/runs", "application/toml", vec![0xff, 0xfe, 0x00])
        .await;
    assert_eq!(response.status().as_u16(), 400);
    let runs = server.get_json("/api/runs", 200).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        0,
        "nothing was queued"
    );
}

#[tokio::test]
async fn unknown_ids_are_404_wrong_methods_405_and_huge_bodies_413() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path("small.toml"),
        "[serve]\nmax_body_bytes = 2048\n",
    )
    .unwrap();
    let config = scratch.path("small.toml").display().to_string();
    let server = scratch.serve(&[("CEREBROS_CONFIG", &config)]);
    for path in [
        "/api/runs/run-nope",
        "/api/runs/run-nope/trials/t1",
        "/api/runs/run-nope/events",
        "/api/runs/..%2F..%2Fetc%2Fpasswd",
        "/api/runs/%2e%2e",
        "/api/runs/a%00b",
        "/api/nothing",
        "/assets/..%2Fmod.rs",
        "/assets/app.js.map",
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status().as_u16(), 404, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["ok"], false, "{path}");
    }
    for (path, status) in [
        ("/api/runs/%FF", 400),
        ("/api/runs?limit=1&limit=2", 400),
        ("/assets/%FF", 400),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error["ok"], false,
            "{path}: every error is the JSON document"
        );
    }
    let long = format!("/api/runs/{}", "r".repeat(5000));
    assert_eq!(server.get(&long).await.status().as_u16(), 404);
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/runs"),
        (reqwest::Method::PUT, "/api/runs"),
        (reqwest::Method::GET, "/api/runs/x/cancel"),
        (reqwest::Method::POST, "/api/health"),
    ] {
        let response = server
            .http
            .request(method.clone(), format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["ok"], false);
    }
    let mut huge = scratch.spec("huge", 1);
    huge.push_str(&format!("\n# {}\n", "x".repeat(4096)));
    let response = server.post("/api/runs", "application/toml", huge).await;
    assert_eq!(response.status().as_u16(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["ok"], false);
    let response = server
        .post("/api/runs/run-nope/cancel", "application/json", "")
        .await;
    assert_eq!(response.status().as_u16(), 404);
    let response = server
        .post("/api/runs/run-nope/resume", "application/json", "")
        .await;
    assert_eq!(response.status().as_u16(), 404);
    // The server still works.
    let id = server.submit(&scratch.spec("after", 1)).await;
    server.wait_for_status(&id, &["succeeded"], RUN_LIMIT).await;
    let response = server
        .post(&format!("/api/runs/{id}/resume"), "application/json", "")
        .await;
    assert_eq!(
        response.status().as_u16(),
        409,
        "an ended run is not resumed"
    );
}

#[tokio::test]
async fn cancel_stops_a_queued_run_at_once_and_a_running_one_at_its_heartbeat() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[("NAS_FIXTURE_SLEEP", "1")]);
    let first = server.submit(&scratch.spec("first", 6)).await;
    let second = server.submit(&scratch.spec("second", 2)).await;
    server
        .wait_for_status(&first, &["running"], RUN_LIMIT)
        .await;
    let response = server
        .post(
            &format!("/api/runs/{second}/cancel"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled", "nobody drove it");
    let response = server
        .post(&format!("/api/runs/{first}/cancel"), "application/json", "")
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelling");
    let doc = server
        .wait_for_status(&first, &["cancelled"], RUN_LIMIT)
        .await;
    assert!(doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] != "running"));
    assert!(
        !scratch.starts().keys().any(|t| t.starts_with(&second)),
        "the cancelled queued run never started"
    );
}

#[tokio::test]
async fn a_run_this_server_drives_stops_starting_trials_as_soon_as_it_is_cancelled() {
    // Short trials, two at a time: between heartbeats (1 s) dozens would start; a cancel
    // of a run this server drives reaches the drive at once, so at most the two in flight
    // (or being started) follow it.
    let scratch = Scratch::new();
    let server = scratch.serve(&[("NAS_FIXTURE_SLEEP", "0.05")]);
    let run = server.submit(&scratch.spec("quick", 2000)).await;
    server.wait_for_status(&run, &["running"], RUN_LIMIT).await;
    assert!(crate::common::eventually(RUN_LIMIT, || scratch
        .starts()
        .len()
        >= 6));
    let response = server
        .post(&format!("/api/runs/{run}/cancel"), "application/json", "")
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelling");
    let at_cancel = scratch.starts().len();
    let doc = server
        .wait_for_status(&run, &["cancelled"], RUN_LIMIT)
        .await;
    let after = scratch.starts().len() - at_cancel;
    assert!(
        after <= 2,
        "{after} trials started after the cancel was answered"
    );
    assert!(doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] != "running"));
}

#[tokio::test]
async fn training_yields_to_answering_http() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    server.get_json("/api/health", 200).await; // answered once the bridge has started
                                               // The HTTP threads keep the process's own priority (the test's, which may itself
                                               // run under `nice`); the bridge's workers run at nice 10 (serve.worker_nice) or lower.
    let http = server.thread_nices("tokio");
    assert!(!http.is_empty());
    let base = http[0];
    assert!(http.iter().all(|n| *n == base), "{http:?}");
    let workers = server.thread_nices("cerebros-py");
    assert_eq!(workers.len(), 2, "the two bridge workers");
    assert!(
        workers.iter().all(|n| *n == base.max(10)),
        "{workers:?}, base {base}"
    );
}

/// API reads run on the store's own thread: a burst of concurrent reads starts no
/// thread per read (each kept an allocator heap: RSS grew 360 MB in a minute of load).
#[tokio::test]
async fn concurrent_reads_do_not_start_a_thread_each() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    server.get_json("/api/health", 200).await;
    let before = server.threads();
    let reads = (0..200).map(|_| server.get("/api/runs"));
    for response in futures_util::future::join_all(reads).await {
        assert_eq!(response.status().as_u16(), 200);
    }
    let after = server.threads();
    assert!(
        after < before + 20,
        "{after} threads after 200 concurrent reads, {before} before"
    );
}
