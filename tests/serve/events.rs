//! The event streams: resumable with `Last-Event-ID` (no gap, no duplicate), live, and
//! leaving nothing behind when a client goes away.

use crate::harness::{Scratch, Served, SseReader};
use cerebros_bridge::nas::store::Store;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

async fn connect(server: &Served, path: &str, last_event_id: Option<i64>) -> SseReader {
    let mut request = server.http.get(format!("{}{path}", server.url));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    SseReader::new(request.send().await.unwrap())
}

async fn event_streams(server: &Served) -> u64 {
    server.get_json("/api/health", 200).await["event_streams"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[("NAS_FIXTURE_SLEEP", "0.3")]);
    let run_id = server.submit(&scratch.spec("resumed", 6)).await;
    let path = format!("/api/runs/{run_id}/events");

    let mut received = Vec::new();
    let mut first = connect(&server, &path, None).await;
    while received.len() < 4 {
        received.push(first.next(WAIT).await.expect("an event"));
    }
    drop(first); // forced disconnect, mid-run
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last = received.last().unwrap().id;
    let mut second = connect(&server, &path, Some(last)).await;
    loop {
        let event = second
            .next(WAIT)
            .await
            .expect("the run's events until it stops");
        let stop = event.kind == "ml.run.stop";
        received.push(event);
        if stop {
            break;
        }
    }
    let stored = Store::open(&scratch.path("store.db"))
        .unwrap()
        .events(&run_id)
        .unwrap();
    let got: Vec<(i64, String)> = received.iter().map(|e| (e.id, e.kind.clone())).collect();
    let want: Vec<(i64, String)> = stored.iter().map(|e| (e.id, e.kind.clone())).collect();
    assert_eq!(got, want, "every stored event once, in order");
    for (event, record) in received.iter().zip(&stored) {
        assert_eq!(event.data["run_id"], run_id.as_str());
        assert_eq!(event.data["data"], record.data);
    }
    let kinds: Vec<&str> = received.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds[0], "ml.run.queued");
    assert_eq!(kinds[1], "ml.run.start");
    assert_eq!(kinds.iter().filter(|k| **k == "ml.run.trial").count(), 6);
    assert!(kinds.contains(&"ml.run.best"));
    // Reconnecting after the end replays nothing more.
    let mut after = connect(&server, &path, Some(received.last().unwrap().id)).await;
    assert!(after.next(Duration::from_millis(1500)).await.is_none());
}

#[tokio::test]
async fn the_stream_of_all_runs_starts_now_and_follows_new_runs_live() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let old = server.submit(&scratch.spec("before", 1)).await;
    server.wait_for_status(&old, &["succeeded"], WAIT).await;
    let mut live = connect(&server, "/api/events", None).await;
    let run_id = server.submit(&scratch.spec("after", 2)).await;
    let started = Instant::now();
    let mut kinds = Vec::new();
    while !kinds.contains(&"ml.run.stop".to_owned()) {
        let event = live.next(WAIT).await.expect("live events");
        assert_eq!(
            event.data["run_id"],
            run_id.as_str(),
            "nothing from before the stream"
        );
        kinds.push(event.kind);
    }
    assert_eq!(kinds[0], "ml.run.queued");
    assert!(started.elapsed() < WAIT);
    let bad = server
        .http
        .get(format!("{}/api/events", server.url))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

#[tokio::test]
async fn clients_that_go_away_leave_nothing_behind() {
    let scratch = Scratch::new();
    let server = scratch.serve(&[]);
    let mut streams = Vec::new();
    for _ in 0..30 {
        streams.push(connect(&server, "/api/events", None).await);
    }
    assert_eq!(event_streams(&server).await, 30);
    drop(streams);
    // A stream notices its client has gone at its next write (a keep-alive every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while event_streams(&server).await > 0 {
        assert!(
            Instant::now() < deadline,
            "streams leaked after their clients left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("cerebros_sse_clients 0"), "{metrics}");
}
