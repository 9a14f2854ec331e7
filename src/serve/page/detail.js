// One run (#run-detail): its header, the objective chart, the selected trial's learning
// curves, the trials table, the best architecture and the cancel button, kept live from
// the run's own event stream (/api/runs/{id}/events).

import { api, runPath } from "./api.js";
import { drawArchitecture } from "./architecture.js";
import { drawCurves, drawObjective } from "./charts.js";
import { elapsedMs, formatDuration, formatNumber, formatTime, metricValue, statusClass } from "./dom.js";
import { applyRunEvent, CANCELLABLE, COMPLETED, progressText, SELF_CONTAINED } from "./runs.js";
import { EventStream } from "./sse.js";
import { TrialsTable } from "./trials.js";

/** How long events are batched before the run is refetched. */
const REFETCH_DELAY_MS = 250;

const $ = (id) => document.getElementById(id);

export class RunDetail {
  /**
   * `onRun(run)` is told each fresh copy of the run (to patch the runs table);
   * `onPickTrial(trialId)` routes to a trial; `notify(message)` reports an error.
   */
  constructor({ onRun, onPickTrial, notify }) {
    Object.assign(this, { onRun, onPickTrial, notify });
    this.root = $("run-detail");
    this.runId = null;
    this.run = null;
    this.trials = new Map();
    this.trialId = null;
    this.stream = null;
    this.refetchTimer = null;
    this.generation = 0;
    this.curves = null;
    this.curvesMessage = "";
    this.table = new TrialsTable($("trials"), { onPick: (id) => onPickTrial(id) });
    $("cancel-run").addEventListener("click", () => this.cancel());
    // The charts are drawn at their on-screen size: redraw them when it changes.
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => this.redraw(), 150);
    });
  }

  /** Shows run `runId` (null: none) and trial `trialId` (null: none). */
  show(runId, trialId = null) {
    if (runId !== this.runId) this.open(runId);
    if (runId && trialId !== this.trialId) this.selectTrial(trialId);
  }

  open(runId) {
    this.stream?.close();
    this.stream = null;
    clearTimeout(this.refetchTimer);
    this.generation += 1;
    this.runId = runId;
    this.run = null;
    this.trials.clear();
    this.trialId = null;
    this.table.clear();
    $("detail-body").hidden = true;
    this.placeholder(runId ? "Loading the run…" : "No run selected");
    if (!runId) {
      this.root.removeAttribute("data-run-id");
      return;
    }
    this.root.setAttribute("data-run-id", runId);
    this.resetCurves();
    this.refetch();
    // Every (re)connection refetches too, so nothing between the fetch and the
    // subscription is missed whatever the server replays to a new subscriber.
    this.stream = new EventStream(runPath(runId, "events"), {
      onEvent: (event) => this.onEvent(event),
      onOpen: () => this.scheduleRefetch(),
    });
  }

  /** Shows the placeholder card with `title` instead of the run. */
  placeholder(title) {
    $("detail-empty").hidden = false;
    $("detail-empty").querySelector("h2").textContent = title;
  }

  /** Fetches the run and its trials now. */
  async refetch() {
    const generation = this.generation;
    try {
      const { run, trials } = await api(runPath(this.runId));
      if (generation !== this.generation) return;
      this.trials = new Map(trials.map((t) => [t.trial_id, t]));
      this.setRun(run);
      this.onRun(run);
    } catch (error) {
      if (generation !== this.generation) return;
      if (error.status === 404) {
        this.placeholder("Run not found");
      } else {
        this.notify(`Could not load run ${this.runId}: ${error.message}`);
      }
    }
  }

  scheduleRefetch() {
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(() => this.refetch(), REFETCH_DELAY_MS);
  }

  /** Applies one event of this run at once, then refetches for the fields events lack. */
  onEvent(event) {
    if (event.run_id !== this.runId || !this.run) return;
    if (event.kind === "ml.run.trial" && event.data?.trial_id != null) {
      const { trial_id: trialId, index, status, metrics, parameters, duration_ms: durationMs, error } =
        event.data;
      const trial = this.trials.get(trialId) ?? { trial_id: trialId, run_id: this.runId, parameters: {} };
      Object.assign(trial, {
        index,
        status,
        metrics: metrics ?? trial.metrics ?? {},
        parameters: parameters ?? trial.parameters,
        duration_ms: durationMs ?? trial.duration_ms,
        error: error ?? null,
      });
      this.trials.set(trialId, trial);
      if (trialId === this.trialId) this.loadCurves(trialId);
    }
    const run = applyRunEvent(this.run, event);
    if (event.kind === "ml.run.trial") {
      // This view holds every trial of the run: its count is exact.
      run.trials_completed = [...this.trials.values()].filter((t) => COMPLETED.has(t.status)).length;
    }
    this.setRun(run);
    if (!SELF_CONTAINED.has(event.kind)) this.scheduleRefetch();
  }

  setRun(run) {
    this.run = run;
    const firstShown = $("detail-body").hidden;
    $("detail-body").hidden = false;
    $("detail-empty").hidden = true;
    $("run-name").textContent = run.name || run.run_id;
    const status = $("run-status");
    status.textContent = run.status;
    status.className = statusClass(run.status);
    $("trial-count").textContent = progressText(run);
    const direction = run.direction === "minimize" ? "min" : "max";
    $("run-objective").textContent = `${run.objective ?? ""} (${direction})`;
    $("run-best").textContent = formatNumber(run.best_metric);
    $("run-dataset").textContent = run.dataset_id ?? "–";
    $("run-created").textContent = formatTime(run.created_at);
    $("run-id").textContent = run.run_id;
    this.tick();
    const error = $("run-error");
    error.hidden = !run.error;
    error.textContent = run.error ?? "";
    $("cancel-run").disabled = !CANCELLABLE.has(run.status);

    const trials = [...this.trials.values()];
    const bestId = run.best_trial_id ?? null;
    this.table.update(trials, run.objective, bestId);
    this.table.select(this.trialId);
    this.drawObjective();
    if (firstShown) this.drawCurves(this.curves, this.curvesMessage); // Now at its real size.
    drawArchitecture($("best-architecture"), this.trials.get(bestId) ?? null, run.objective);
  }

  /** Refreshes the run's duration while it runs (called every second). */
  tick() {
    const run = this.run;
    if (!run) return;
    const ms = run.started_at ? elapsedMs(run.started_at, run.finished_at) : null;
    $("run-duration").textContent = formatDuration(ms);
  }

  drawObjective() {
    const run = this.run;
    const points = [...this.trials.values()].map((t) => ({
      trialId: t.trial_id,
      index: t.index,
      value: metricValue(t.metrics, run.objective),
      status: t.status,
    }));
    drawObjective($("objective-chart"), {
      points,
      objective: run.objective,
      direction: run.direction,
      selected: this.trialId,
      onPick: (id) => this.onPickTrial(id),
    });
  }

  selectTrial(trialId) {
    this.trialId = trialId;
    this.table.select(trialId);
    if (this.run) this.drawObjective();
    if (trialId) this.loadCurves(trialId);
    else this.resetCurves();
  }

  redraw() {
    if (!this.run) return;
    this.drawObjective();
    this.drawCurves(this.curves, this.curvesMessage);
  }

  /** Draws `curves`, or `message` in an empty chart when `curves` is null. */
  drawCurves(curves, message = "") {
    this.curves = curves;
    this.curvesMessage = message;
    drawCurves($("curve-chart"), $("curve-legend"), curves ?? {});
    const empty = $("curve-chart").querySelector("text.empty");
    if (empty && message) empty.textContent = message;
  }

  resetCurves() {
    $("curve-title").textContent = "Learning curves";
    this.drawCurves(null, "Click a trial to see its learning curves");
  }

  async loadCurves(trialId) {
    const generation = this.generation;
    $("curve-title").textContent = `Trial ${trialId}: learning curves`;
    try {
      const { trial, curves } = await api(runPath(this.runId, "trials", trialId));
      if (generation !== this.generation || trialId !== this.trialId) return;
      const label = trial.index == null ? trialId : `#${trial.index} (${trialId})`;
      $("curve-title").textContent = `Trial ${label}: learning curves`;
      this.drawCurves(curves ?? trial.metrics?.curve ?? {});
    } catch (error) {
      if (generation !== this.generation || trialId !== this.trialId) return;
      this.drawCurves(null, `Could not load the trial: ${error.message}`);
    }
  }

  async cancel() {
    const button = $("cancel-run");
    const generation = this.generation;
    button.disabled = true;
    try {
      const { status } = await api(runPath(this.runId, "cancel"), { method: "POST" });
      if (generation !== this.generation) return;
      this.setRun({ ...this.run, status });
      this.onRun(this.run);
      this.scheduleRefetch();
    } catch (error) {
      this.notify(`Could not cancel: ${error.message}`);
      if (generation === this.generation && this.run) button.disabled = !CANCELLABLE.has(this.run.status);
    }
  }
}
