//! The live page (`/`) in a real browser: headless Chromium driven through chromedriver.
//! A run submitted through the form grows live (trial count and chart points) until it
//! succeeds; a trial's curves show on click; the trials table sorts; a second run is
//! cancelled from the page; a pruned trial's row says so, with its epochs; a bad spec shows
//! the API's message; screenshots of a laptop and a phone go to `target/screenshots/`; the
//! console has no errors. A second test goes through the token form.

mod driver;

use crate::common;
use crate::harness::{Scratch, Served};
use driver::{Browser, ConsoleEntry, Driver, Screen};
use fantoccini::Locator;
use serde_json::Value;
use std::cmp::Ordering;
use std::path::PathBuf;
use std::time::Duration;

/// Trials sleep this long before training, so the page's growth can be watched.
const TRIAL_SLEEP: &str = "0.6";
/// Limit of one wait on the page (a whole small run fits in it).
const WAIT: Duration = Duration::from_secs(60);
/// One browser at a time: two Chromiums on two cores would only slow each other down.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the page shows, read in one script (the hooks documented in index.html).
const PAGE_STATE: &str = r##"
const $ = (id) => document.getElementById(id);
const text = (id) => $(id).textContent;
const rows = (selector) => [...document.querySelectorAll(selector)];
return {
  reloaded: window.browserTestMark !== "set",
  live: document.body.dataset.live,
  notice: $("notice").hidden ? null : text("notice"),
  token_form: !$("token-form").hidden,
  token_hint: text("token-hint"),
  submit_message: text("submit-message"),
  submit_class: $("submit-message").className,
  runs: rows("#runs tbody tr[data-run-id]").map((r) => ({
    id: r.dataset.runId, status: r.cells[1].textContent, trials: r.cells[2].textContent,
  })),
  detail_run: $("run-detail").getAttribute("data-run-id"),
  detail_shown: !$("detail-body").hidden,
  run_status: text("run-status"),
  trial_count: text("trial-count"),
  cancel_disabled: $("cancel-run").disabled,
  points: rows("#objective-chart circle.point").length,
  curves: rows("#curve-chart path.curve").map((p) => p.dataset.curve),
  curve_title: text("curve-title"),
  best_architecture: text("best-architecture"),
  trials: rows("#trials tbody tr[data-trial-id]").map((r) => ({
    id: r.dataset.trialId, index: r.cells[0].textContent, status: r.cells[1].textContent,
    objective: r.cells[2].textContent,
  })),
  objective_sort: document.querySelector('#trials th[data-sort="objective"]').getAttribute("aria-sort"),
  overflow_x: document.documentElement.scrollWidth - window.innerWidth,
};
"##;

/// Scrolls the page, its tables and the spec back to their start (WebDriver scrolls to
/// what it clicks), for a screenshot.
const SCROLL_BACK: &str = r#"
for (const node of document.querySelectorAll(".scroll, textarea")) node.scrollTo(0, 0);
window.scrollTo(0, 0);
return null;
"#;

/// Marks the page: the mark is gone if the page reloads (`reloaded` in `PAGE_STATE`).
const MARK_PAGE: &str = r#"window.browserTestMark = "set"; return null;"#;

#[tokio::test]
async fn the_page_follows_runs_live_in_a_real_browser() {
    let _one = ONE_BROWSER.lock().await;
    let scratch = Scratch::new();
    let served = scratch.serve(&[("NAS_FIXTURE_SLEEP", TRIAL_SLEEP)]);
    let driver = Driver::start();
    let mut laptop = driver
        .session(Screen::Laptop {
            width: 1280,
            height: 900,
        })
        .await;
    laptop.client.goto(&served.url).await.unwrap();
    laptop
        .wait_for(PAGE_STATE, "the live indicator connected", WAIT, |s| {
            s["live"] == "connected"
        })
        .await;
    laptop.eval(MARK_PAGE).await;

    let run_id = submit_through_form(&laptop, &common::iris_spec("browser-live", 6, 4)).await;
    assert_eq!(served.run(&run_id).await["run"]["name"], "browser-live");
    let done = watch_the_run_grow(&laptop, &run_id, 6).await;
    assert_eq!(done["run_status"], "succeeded", "{done:#}");

    let doc = served.run(&run_id).await;
    show_a_trial_curve(&laptop, &served, &run_id, &doc).await;
    laptop.eval(SCROLL_BACK).await;
    laptop
        .full_page_screenshot(&screenshot("serve-page-laptop.png"))
        .await;
    let best = doc["run"]["best_trial_id"].as_str().unwrap();
    let state = laptop.eval(PAGE_STATE).await;
    let architecture = state["best_architecture"].as_str().unwrap();
    assert!(
        architecture.contains(best),
        "the best architecture names trial {best}: {state:#}"
    );
    sort_by_objective(&laptop, &doc).await;

    cancel_a_second_run(&laptop, &served, &run_id).await;
    show_pruned_trials(&laptop, &served).await;
    refuse_a_bad_spec(&laptop, &served).await;
    let state = laptop.eval(PAGE_STATE).await;
    assert_eq!(
        state["reloaded"], false,
        "the page never reloaded: {state:#}"
    );
    assert_eq!(state["notice"], Value::Null, "no error notice: {state:#}");

    let mut phone = driver
        .session(Screen::Phone {
            width: 390,
            height: 844,
        })
        .await;
    let trial_id = doc["trials"][0]["trial_id"].as_str().unwrap();
    let trial_url = format!("{}/#/runs/{run_id}/trials/{trial_id}", served.url);
    phone.client.goto(&trial_url).await.unwrap();
    let state = phone
        .wait_for(
            PAGE_STATE,
            "the finished run with a trial's curves",
            WAIT,
            |s| {
                s["trial_count"] == "6/6"
                    && s["points"] == 6
                    && !s["curves"].as_array().unwrap().is_empty()
            },
        )
        .await;
    assert!(
        state["overflow_x"].as_i64().unwrap() <= 0,
        "no sideways scrolling on a phone: {state:#}"
    );
    phone
        .eval(r#"document.getElementById("run-detail").scrollIntoView(); return null;"#)
        .await;
    phone.screenshot(&screenshot("serve-page-phone.png")).await;

    assert_no_console_errors(&mut laptop, Some(400)).await;
    assert_no_console_errors(&mut phone, None).await;
    phone.close().await;
    laptop.close().await;
}

#[tokio::test]
async fn the_page_asks_for_the_token_once() {
    let _one = ONE_BROWSER.lock().await;
    let scratch = Scratch::new();
    let served = scratch.serve(&[
        ("CEREBROS_SERVE_TOKEN", "browser-secret"),
        ("NAS_FIXTURE_SLEEP", TRIAL_SLEEP),
    ]);
    let driver = Driver::start();
    let mut browser = driver
        .session(Screen::Laptop {
            width: 1280,
            height: 900,
        })
        .await;
    browser.client.goto(&served.url).await.unwrap();
    browser
        .wait_for(PAGE_STATE, "the token form", WAIT, |s| {
            s["token_form"] == true
        })
        .await;

    save_token(&browser, "not-the-token").await;
    let state = browser
        .wait_for(
            PAGE_STATE,
            "the token form again, for a refused token",
            WAIT,
            |s| s["token_form"] == true && s["token_hint"].as_str().unwrap().contains("refused"),
        )
        .await;
    assert_eq!(state["runs"], serde_json::json!([]), "{state:#}");

    save_token(&browser, "browser-secret").await;
    browser
        .wait_for(PAGE_STATE, "the live indicator connected", WAIT, |s| {
            s["live"] == "connected" && s["token_form"] == false
        })
        .await;
    let run_id = served
        .submit(&common::iris_spec("browser-token", 2, 2))
        .await;
    browser
        .wait_for(PAGE_STATE, "the submitted run's row", WAIT, |s| {
            s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == run_id.as_str())
        })
        .await;
    assert_no_console_errors(&mut browser, Some(401)).await;
    browser.close().await;
}

/// Where a screenshot goes: `target/screenshots/` of the repository.
fn screenshot(name: &str) -> PathBuf {
    common::root().join("target/screenshots").join(name)
}

/// Types `spec` into the form, submits it and returns the id the page says was queued.
async fn submit_through_form(browser: &Browser, spec: &str) -> String {
    let spec = spec
        .trim_start()
        .replace("parallelism = 2", "parallelism = 1");
    let before = browser.eval(PAGE_STATE).await["submit_message"].clone();
    fill(browser, "#submit-spec", &spec).await;
    click(browser, "#submit-run").await;
    let state = browser
        .wait_for(PAGE_STATE, "the submitted run's id", WAIT, |s| {
            s["submit_message"] != before
                && s["submit_message"].as_str().unwrap().starts_with("queued ")
        })
        .await;
    let run_id = state["submit_message"].as_str().unwrap()["queued ".len()..].to_owned();
    browser
        .wait_for(PAGE_STATE, "the submitted run", WAIT, |s| {
            s["detail_run"] == run_id.as_str() && s["detail_shown"] == true
        })
        .await;
    run_id
}

/// Watches, without reloading, the trial count and the objective chart's points of the
/// shown run grow to `trials`; returns the page state once the run has finished.
async fn watch_the_run_grow(browser: &Browser, run_id: &str, trials: u64) -> Value {
    let all = format!("{trials}/{trials}");
    let mut readings: Vec<(u64, u64)> = Vec::new();
    let done = browser
        .wait_for(
            PAGE_STATE,
            &format!("run {run_id} finished, {all} trials"),
            WAIT,
            |s| {
                let completed = s["trial_count"]
                    .as_str()
                    .and_then(|c| c.split('/').next())
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let reading = (completed, s["points"].as_u64().unwrap());
                if readings.last() != Some(&reading) {
                    readings.push(reading);
                }
                let finished = s["run_status"] != "running" && s["run_status"] != "queued";
                s["detail_run"] == run_id && finished && s["trial_count"] == all.as_str()
            },
        )
        .await;
    assert_eq!(done["reloaded"], false, "the page never reloaded: {done:#}");
    assert_eq!(done["points"], trials, "one point per trial: {done:#}");
    for pair in readings.windows(2) {
        assert!(
            pair[0].0 <= pair[1].0 && pair[0].1 <= pair[1].1,
            "the trial count and the points only grow: {readings:?}"
        );
    }
    let between = |pick: fn(&(u64, u64)) -> u64| {
        readings
            .iter()
            .map(pick)
            .filter(|&n| 0 < n && n < trials)
            .count()
    };
    assert!(
        between(|r| r.0) >= 2 && between(|r| r.1) >= 2,
        "the page showed the run growing (at least two readings between none and all): \
         (completed, points) readings {readings:?}"
    );
    done
}

/// Clicks the first trial row; its curves show, one path per series of the API's curves.
async fn show_a_trial_curve(browser: &Browser, served: &Served, run_id: &str, doc: &Value) {
    let row = browser
        .client
        .find(Locator::Css("#trials tr[data-trial-id]"))
        .await
        .expect("a trial row");
    let trial_id = row.attr("data-trial-id").await.unwrap().unwrap();
    row.click().await.unwrap();
    let trial = served
        .get_json(&format!("/api/runs/{run_id}/trials/{trial_id}"), 200)
        .await;
    let mut series: Vec<String> = trial["curves"]
        .as_object()
        .expect("the trial's curves")
        .iter()
        .filter(|(_, values)| values.as_array().is_some_and(|v| !v.is_empty()))
        .map(|(name, _)| name.clone())
        .collect();
    series.sort();
    assert!(!series.is_empty(), "trial {trial_id} has curves: {trial:#}");
    let state = browser
        .wait_for(
            PAGE_STATE,
            &format!("trial {trial_id}'s curves"),
            WAIT,
            |s| {
                let mut shown: Vec<String> = serde_json::from_value(s["curves"].clone()).unwrap();
                shown.sort();
                shown == series && s["curve_title"].as_str().unwrap().contains(&trial_id)
            },
        )
        .await;
    assert_eq!(
        state["trials"].as_array().unwrap().len(),
        doc["trials"].as_array().unwrap().len()
    );
}

/// Sorts the trials table by objective (ascending, then descending) and checks the row
/// order against the API's trials: missing values last, ties by index.
async fn sort_by_objective(browser: &Browser, doc: &Value) {
    let objective = doc["run"]["objective"].as_str().unwrap();
    let mut trials: Vec<(Option<f64>, i64, String)> = doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["metrics"][objective].as_f64(),
                t["index"].as_i64().unwrap(),
                t["trial_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (direction, aria) in [
        (Ordering::Less, "ascending"),
        (Ordering::Greater, "descending"),
    ] {
        trials.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => {
                let by_value = x.partial_cmp(&y).unwrap();
                let by_value = if direction == Ordering::Less {
                    by_value
                } else {
                    by_value.reverse()
                };
                by_value.then(a.1.cmp(&b.1))
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        let expected: Vec<&str> = trials.iter().map(|t| t.2.as_str()).collect();
        click(browser, r#"#trials th[data-sort="objective"]"#).await;
        browser
            .wait_for(
                PAGE_STATE,
                &format!("the trials sorted by {objective}, {aria}: {expected:?}"),
                WAIT,
                |s| {
                    let shown: Vec<&str> = s["trials"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["id"].as_str().unwrap())
                        .collect();
                    shown == expected && s["objective_sort"] == aria
                },
            )
            .await;
    }
}

/// Submits a long run, picks it in the runs table, cancels it from the page once it runs;
/// the page and the store say cancelled.
async fn cancel_a_second_run(browser: &Browser, served: &Served, first: &str) {
    let run_id = submit_through_form(browser, &common::iris_spec("browser-cancel", 60, 4)).await;
    // Pick the first run, then the new one, in the runs table.
    for pick in [first, run_id.as_str()] {
        click(
            browser,
            &format!(r#"#runs tr[data-run-id="{pick}"] td.status"#),
        )
        .await;
        browser
            .wait_for(PAGE_STATE, &format!("run {pick} picked"), WAIT, |s| {
                s["detail_run"] == pick && s["detail_shown"] == true
            })
            .await;
    }
    browser
        .wait_for(PAGE_STATE, "the second run running", WAIT, |s| {
            s["run_status"] == "running" && s["cancel_disabled"] == false
        })
        .await;
    click(browser, "#cancel-run").await;
    let state = browser
        .wait_for(PAGE_STATE, "the second run cancelled", WAIT, |s| {
            s["run_status"] == "cancelled"
        })
        .await;
    assert_eq!(state["cancel_disabled"], true, "{state:#}");
    let doc = served.run(&run_id).await;
    assert_eq!(
        doc["run"]["status"], "cancelled",
        "the store says cancelled: {doc:#}"
    );
    browser
        .wait_for(PAGE_STATE, "the runs table showing the cancel", WAIT, |s| {
            s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == run_id.as_str() && r["status"] == "cancelled")
        })
        .await;
}

/// A run with the `asha` pruner (one trial at a time, so the same trials are pruned each
/// time): each pruned trial's row reads `pruned (epoch N)`, N its epochs run in the API.
async fn show_pruned_trials(browser: &Browser, served: &Served) {
    let spec = common::iris_spec("browser-pruned", 6, 6)
        .replace("parallelism = 2", "parallelism = 1")
        + "[search]\npruner = \"asha\"\n";
    let run_id = served.submit(&spec).await;
    let doc = served.wait_for_status(&run_id, &["succeeded"], WAIT).await;
    let mut expected: Vec<(String, String)> = doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "pruned")
        .map(|t| {
            let epochs = t["metrics"]["epochs_run"]
                .as_u64()
                .expect("a pruned trial's epochs");
            (
                t["trial_id"].as_str().unwrap().to_owned(),
                format!("pruned (epoch {epochs})"),
            )
        })
        .collect();
    expected.sort();
    assert!(!expected.is_empty(), "asha pruned a trial: {doc:#}");
    click(
        browser,
        &format!(r#"#runs tr[data-run-id="{run_id}"] td.status"#),
    )
    .await;
    browser
        .wait_for(
            PAGE_STATE,
            &format!("run {run_id}'s pruned trials"),
            WAIT,
            |s| {
                let mut shown: Vec<(String, String)> = s["trials"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["status"].as_str().unwrap().starts_with("pruned"))
                    .map(|t| {
                        (
                            t["id"].as_str().unwrap().to_owned(),
                            t["status"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                shown.sort();
                s["detail_run"] == run_id.as_str() && shown == expected
            },
        )
        .await;
}

/// A spec with an unknown field: the page shows the API's 400 message and key.
async fn refuse_a_bad_spec(browser: &Browser, served: &Served) {
    let spec = "name = \"browser-bad\"\ndataset = \"sklearn:iris\"\nunknown_knob = 3\n";
    let response = served.post("/api/runs", "application/toml", spec).await;
    assert_eq!(response.status().as_u16(), 400);
    let error = response.json::<Value>().await.unwrap()["error"].clone();
    let message = error["message"].as_str().unwrap();
    let expected = match error["key"].as_str() {
        Some(key) => format!("{message} ({key})"),
        None => message.to_owned(),
    };
    fill(browser, "#submit-spec", spec).await;
    click(browser, "#submit-run").await;
    browser
        .wait_for(
            PAGE_STATE,
            &format!("the spec error {expected:?}"),
            WAIT,
            |s| s["submit_message"] == expected.as_str() && s["submit_class"] == "error",
        )
        .await;
}

/// Types `token` into the token form and saves it.
async fn save_token(browser: &Browser, token: &str) {
    fill(browser, "#token-input", token).await;
    click(browser, "#token-save").await;
}

/// Replaces the text of the field `selector` by typing `text`.
async fn fill(browser: &Browser, selector: &str, text: &str) {
    let field = browser.client.find(Locator::Css(selector)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks the element `selector`.
async fn click(browser: &Browser, selector: &str) {
    let element = browser
        .client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no {selector} on the page: {e}"));
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("{selector} could not be clicked: {e}"));
}

/// No SEVERE console entry, except Chrome's network entries for the API's deliberate
/// `refused` answers (Chrome logs each non-2xx response as a SEVERE network entry); when
/// `refused` is given, at least one such entry (so the log is really read).
async fn assert_no_console_errors(browser: &mut Browser, refused: Option<u16>) {
    let deliberate = |e: &ConsoleEntry| {
        refused.is_some_and(|status| {
            e.source == "network"
                && e.message.contains("/api/")
                && e.message.contains(&format!("status of {status} "))
        })
    };
    let console = browser.console().await;
    let errors: Vec<&ConsoleEntry> = console
        .iter()
        .filter(|e| e.level == "SEVERE" && !deliberate(e))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    if let Some(status) = refused {
        assert!(
            console.iter().any(deliberate),
            "the console log has the deliberate {status} answers: {console:#?}"
        );
    }
}
