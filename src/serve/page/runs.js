// The runs table (#runs): one row per run, newest first, patched in place as events
// arrive (rows are kept, not rebuilt, so a click never lands on a replaced element).

import { el, elapsedMs, formatDuration, formatNumber, statusClass } from "./dom.js";

/** Run statuses in which the run can still be cancelled. */
export const CANCELLABLE = new Set(["queued", "running", "interrupted"]);

/**
 * Events that carry all a view needs (a trial's outcome, a new best): applied as they
 * come, without fetching the run again (its document grows with every trial).
 */
export const SELF_CONTAINED = new Set(["ml.run.trial", "ml.run.best"]);

/** Trial statuses a run counts in `trials_completed` (Rust `TrialState::COMPLETED`). */
export const COMPLETED = new Set(["succeeded", "failed", "pruned"]);

/** Patches a Run object from one event (`{kind, data}`) of that run; returns the run. */
export function applyRunEvent(run, { kind, data = {} }) {
  switch (kind) {
    case "ml.run.start":
      run.status = "running";
      break;
    case "ml.run.trial":
      // Finished trials count at once; the refetch that follows brings the exact figure.
      if (COMPLETED.has(data.status)) {
        run.trials_completed = Math.min((run.trials_completed ?? 0) + 1, run.trials_planned ?? Infinity);
      }
      break;
    case "ml.run.best":
      if (typeof data.value === "number") run.best_metric = data.value;
      if (data.trial_id != null) run.best_trial_id = data.trial_id;
      break;
    case "ml.run.stop":
    case "ml.run.exception":
      if (data.status) run.status = data.status;
      if (data.error != null) run.error = typeof data.error === "string" ? data.error : data.error.message;
      break;
    default:
      break;
  }
  return run;
}

/** `completed/planned` for a run. */
export function progressText(run) {
  return `${run.trials_completed ?? 0}/${run.trials_planned ?? "?"}`;
}

function createdAt(run) {
  const t = Date.parse(run.created_at ?? "");
  return Number.isNaN(t) ? Infinity : t; // Unknown time: a brand-new run, on top.
}

/** The runs table. `filter()` returns the status shown ("" for all). */
export class RunsTable {
  constructor(table, { empty, filter }) {
    this.tbody = table.tBodies[0];
    this.empty = empty;
    this.filter = filter;
    this.runs = new Map();
    this.rows = new Map();
    this.selected = null;
  }

  /** Replaces the whole list (a fresh first page). */
  reset(runs) {
    this.runs.clear();
    for (const row of this.rows.values()) row.remove();
    this.rows.clear();
    this.merge(runs);
  }

  /** Adds or updates runs (the rows of a later page, or refetched runs). */
  merge(runs) {
    for (const run of runs) this.upsert(run, false);
    this.order();
  }

  /** Adds or replaces one run. */
  upsert(run, reorder = true) {
    const wanted = this.filter();
    if (wanted && run.status !== wanted) {
      this.remove(run.run_id);
      return;
    }
    this.runs.set(run.run_id, run);
    this.render(run);
    if (reorder) this.order();
  }

  remove(runId) {
    this.runs.delete(runId);
    this.rows.get(runId)?.remove();
    this.rows.delete(runId);
    this.empty.hidden = this.runs.size > 0;
  }

  /** Patches a known run from one of its events; false when the run is not listed. */
  applyEvent(event) {
    const run = this.runs.get(event.run_id);
    if (!run) return false;
    this.upsert(applyRunEvent(run, event));
    return true;
  }

  select(runId) {
    this.rows.get(this.selected)?.classList.remove("selected");
    this.selected = runId;
    this.rows.get(runId)?.classList.add("selected");
  }

  /** Refreshes the duration of running runs (called every second). */
  tick() {
    for (const [id, run] of this.runs) {
      if (run.status === "running") this.rows.get(id).cells[4].textContent = duration(run);
    }
  }

  render(run) {
    let row = this.rows.get(run.run_id);
    if (!row) {
      const link = el("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` });
      row = el(
        "tr",
        { "data-run-id": run.run_id },
        el("td", { class: "name" }, link),
        el("td", { class: "status" }),
        el("td", { class: "progress num" }),
        el("td", { class: "best num" }),
        el("td", { class: "duration num" }),
      );
      row.addEventListener("click", (event) => {
        if (event.target.closest("a")) return; // The link navigates by itself.
        location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
      });
      if (run.run_id === this.selected) row.classList.add("selected");
      this.rows.set(run.run_id, row);
    }
    const [name, status, progress, best, time] = row.cells;
    name.firstChild.textContent = run.name || run.run_id;
    name.firstChild.title = run.run_id;
    status.textContent = run.status;
    status.className = statusClass(run.status);
    progress.textContent = progressText(run);
    best.textContent = formatNumber(run.best_metric);
    best.title = run.objective ?? "";
    time.textContent = duration(run);
  }

  /** Puts the rows in newest-first order, moving only rows that are out of place. */
  order() {
    const sorted = [...this.runs.values()].sort((a, b) => createdAt(b) - createdAt(a));
    sorted.forEach((run, i) => {
      const row = this.rows.get(run.run_id);
      if (this.tbody.rows[i] !== row) this.tbody.insertBefore(row, this.tbody.rows[i] ?? null);
    });
    this.empty.hidden = this.runs.size > 0;
  }
}

function duration(run) {
  return run.started_at ? formatDuration(elapsedMs(run.started_at, run.finished_at)) : "–";
}
