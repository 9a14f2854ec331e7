// The live run page of `cerebros-bridge serve`: wires the runs table, the run detail and
// the spec form to the API and to the global event stream (/api/events), and routes with
// the URL hash (#/runs/<id> or #/runs/<id>/trials/<trial id>) so a reload keeps the view.

import { api } from "./api.js";
import { RunDetail } from "./detail.js";
import { RunsTable, SELF_CONTAINED } from "./runs.js";
import { EventStream } from "./sse.js";

const PAGE_SIZE = 50;
const NOTICE_MS = 8000;

/** The spec the form starts with: a small, valid run. */
const EXAMPLE_SPEC = `name = "digits-small"
dataset = "sklearn:digits"
objective = "val_accuracy"
direction = "maximize"
seed = 7

[search_space]
maximum_levels = 2
maximum_units_per_level = 2
maximum_neurons_per_unit = 16

[budget]
trials = 6
epochs = 4
parallelism = 1
`;

const $ = (id) => document.getElementById(id);

let noticeTimer = null;

/** Shows an error message at the top of the page for a few seconds. */
function notify(message) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.hidden = true;
  }, NOTICE_MS);
}

const runs = new RunsTable($("runs"), { empty: $("runs-empty"), filter: () => $("status-filter").value });
let nextCursor = null;

/**
 * Loads runs: `"reset"` replaces the list with the first page, `"merge"` updates it with
 * the first page (keeping the rows and any older pages shown), `"more"` adds the next page.
 */
async function loadRuns(mode) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const status = $("status-filter").value;
  if (status) params.set("status", status);
  if (mode === "more" && nextCursor) params.set("cursor", nextCursor);
  try {
    const page = await api(`/api/runs?${params}`);
    if (mode === "reset") runs.reset(page.runs);
    else runs.merge(page.runs);
    if (mode !== "merge" || nextCursor === null) nextCursor = page.next_cursor ?? null;
    $("runs-more").hidden = nextCursor === null;
  } catch (error) {
    notify(`Could not load the runs: ${error.message}`);
  }
}

const pending = new Map();

/** Refetches one run's row shortly (events of one run come in bursts). */
function refreshRun(runId) {
  clearTimeout(pending.get(runId));
  pending.set(
    runId,
    setTimeout(async () => {
      pending.delete(runId);
      try {
        const { run } = await api(`/api/runs/${encodeURIComponent(runId)}`);
        runs.upsert(run);
      } catch (error) {
        if (error.status !== 404) notify(`Could not refresh run ${runId}: ${error.message}`);
      }
    }, 250),
  );
}

const detail = new RunDetail({
  onRun: (run) => runs.upsert(run),
  onPickTrial: (trialId) => {
    location.hash = `#/runs/${encodeURIComponent(detail.runId)}/trials/${encodeURIComponent(trialId)}`;
  },
  notify,
});

/** Below this width the run detail sits under the runs table (see app.css). */
const ONE_COLUMN = window.matchMedia("(max-width: 999px)");

/** Shows what the hash names; `event` is the hashchange (none on load). */
function route(event) {
  const match = /^#\/runs\/([^/]+)(?:\/trials\/([^/]+))?$/.exec(location.hash);
  let runId = null;
  let trialId = null;
  try {
    runId = match ? decodeURIComponent(match[1]) : null;
    trialId = match?.[2] ? decodeURIComponent(match[2]) : null;
  } catch {
    // A malformed escape in a hand-typed hash: show no run.
  }
  const changed = runId !== detail.runId;
  runs.select(runId);
  detail.show(runId, trialId);
  // On a phone the detail is below the fold: bring a newly picked run into view.
  if (event && changed && runId && ONE_COLUMN.matches) $("run-detail").scrollIntoView({ block: "start" });
}

async function submit(event) {
  event.preventDefault();
  const button = $("submit-run");
  const message = $("submit-message");
  button.disabled = true;
  message.className = "";
  message.textContent = "submitting…";
  try {
    const answer = await api("/api/runs", {
      method: "POST",
      body: $("submit-spec").value,
      contentType: "application/toml",
    });
    message.className = "ok";
    message.textContent = `${answer.status ?? "queued"} ${answer.run_id}`;
    refreshRun(answer.run_id);
    location.hash = `#/runs/${encodeURIComponent(answer.run_id)}`;
  } catch (error) {
    message.className = "error";
    const key = error.error?.key;
    message.textContent = key ? `${error.message} (${key})` : error.message;
  } finally {
    button.disabled = false;
  }
}

function setLive(state) {
  document.body.dataset.live = state;
  $("live-text").textContent = state === "connected" ? "live" : "reconnecting…";
}

$("submit-spec").value = EXAMPLE_SPEC;
$("submit-form").addEventListener("submit", submit);
$("runs-more").addEventListener("click", () => loadRuns("more"));
$("status-filter").addEventListener("change", () => {
  nextCursor = null;
  loadRuns("reset");
});
window.addEventListener("hashchange", route);
setInterval(() => {
  runs.tick();
  detail.tick();
}, 1000);

route();
loadRuns("reset");
new EventStream("/api/events", {
  onEvent: (event) => {
    if (typeof event.run_id !== "string") return;
    // A known run's trial or best is applied as it comes; anything else is fetched.
    const known = runs.applyEvent(event);
    if (!known || !SELF_CONTAINED.has(event.kind)) refreshRun(event.run_id);
  },
  // A (re)connection may follow missed events: refresh the first page.
  onOpen: () => loadRuns("merge"),
  onState: setLive,
});
