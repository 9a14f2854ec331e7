// The trials table (#trials), sortable by clicking a header (index, status, objective,
// params, duration); rows are kept and patched in place as trials arrive.

import { el, formatDuration, formatNumber, metricValue, statusClass } from "./dom.js";

/** `levels` ([[32, 16], [8]]) as "32·16 | 8", or "–". */
export function levelsText(levels) {
  if (!Array.isArray(levels) || !levels.length) return "–";
  return levels.map((level) => (Array.isArray(level) ? level.join("·") : String(level))).join(" | ");
}

/** A trial's error ({class, message} or a string) as one line, or "". */
export function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return [error.class, error.message].filter(Boolean).join(": ");
}

/** Sort keys of the table headers' `data-sort`: each maps a trial to a comparable value. */
const SORT_KEYS = {
  index: (t) => t.index,
  status: (t) => t.status,
  objective: (t, objective) => metricValue(t.metrics, objective),
  params: (t) => metricValue(t.metrics, "params"),
  duration: (t) => (typeof t.duration_ms === "number" ? t.duration_ms : null),
};

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1; // Missing values last, whatever the order.
  if (b === null || b === undefined) return -1;
  return a < b ? -1 : 1;
}

export class TrialsTable {
  /** `onPick(trialId)` is called when a row is clicked. */
  constructor(table, { onPick }) {
    this.table = table;
    this.tbody = table.tBodies[0];
    this.onPick = onPick;
    this.rows = new Map();
    this.sort = { key: "index", dir: 1 };
    this.objective = "objective";
    this.bestId = null;
    this.selected = null;
    this.trials = [];
    for (const th of table.tHead.querySelectorAll("th[data-sort]")) {
      const activate = () => this.sortBy(th.dataset.sort);
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          activate();
        }
      });
    }
  }

  /** Clicking the sorted column again reverses it. */
  sortBy(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    this.order();
  }

  clear() {
    this.tbody.replaceChildren();
    this.rows.clear();
    this.trials = [];
    this.selected = null;
  }

  /** Shows `trials` (all of the run's trials) for `objective`, marking `bestId`. */
  update(trials, objective, bestId) {
    this.trials = trials;
    this.objective = objective;
    this.bestId = bestId;
    this.table.querySelector("#trials-objective").textContent = objective;
    const seen = new Set();
    for (const trial of trials) {
      seen.add(trial.trial_id);
      this.render(trial);
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    this.order();
  }

  select(trialId) {
    this.rows.get(this.selected)?.classList.remove("selected");
    this.selected = trialId;
    this.rows.get(trialId)?.classList.add("selected");
  }

  render(trial) {
    let row = this.rows.get(trial.trial_id);
    if (!row) {
      row = el("tr", { "data-trial-id": trial.trial_id, tabindex: 0 });
      for (let i = 0; i < 7; i++) row.append(el("td"));
      row.addEventListener("click", () => this.onPick(trial.trial_id));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter") this.onPick(trial.trial_id);
      });
      this.rows.set(trial.trial_id, row);
      if (trial.trial_id === this.selected) row.classList.add("selected");
    }
    const [index, status, objective, params, duration, levels, note] = row.cells;
    index.textContent = trial.index ?? "";
    index.className = "num";
    status.textContent = statusText(trial);
    status.className = statusClass(trial.status);
    objective.textContent = formatNumber(metricValue(trial.metrics, this.objective));
    objective.className = "num";
    params.textContent = formatNumber(metricValue(trial.metrics, "params"));
    params.className = "num";
    duration.textContent = formatDuration(trial.duration_ms);
    duration.className = "num";
    levels.textContent = levelsText(trial.parameters?.levels);
    levels.className = "mono";
    const error = errorText(trial.error);
    // The trial's own part of its id (`t003`); the whole id is the cell's title.
    note.textContent = error || shortTrialId(trial);
    note.className = error ? "error-cell" : "mono muted";
    note.title = error || trial.trial_id;
    row.classList.toggle("best", trial.trial_id === this.bestId);
  }

  order() {
    const { key, dir } = this.sort;
    const value = SORT_KEYS[key];
    const sorted = [...this.trials].sort(
      (a, b) => {
        const va = value(a, this.objective);
        const vb = value(b, this.objective);
        // Missing values stay last in both directions; ties fall back to the index.
        if (va === null || va === undefined || vb === null || vb === undefined) return compare(va, vb);
        return dir * compare(va, vb) || compare(a.index, b.index);
      },
    );
    sorted.forEach((trial, i) => {
      const row = this.rows.get(trial.trial_id);
      if (this.tbody.rows[i] !== row) this.tbody.insertBefore(row, this.tbody.rows[i] ?? null);
    });
    for (const th of this.table.tHead.querySelectorAll("th[data-sort]")) {
      const sorted = th.dataset.sort === key;
      th.setAttribute("aria-sort", sorted ? (dir > 0 ? "ascending" : "descending") : "none");
    }
  }
}

/** `t003` for `<run_id>-t003`: the run's id is the same on every row. */
function shortTrialId(trial) {
  const prefix = `${trial.run_id}-`;
  return trial.trial_id.startsWith(prefix) ? trial.trial_id.slice(prefix.length) : trial.trial_id;
}

/** A trial's status; a pruned trial's with the epochs it ran (`pruned (epoch 2)`). */
function statusText(trial) {
  const epochs = metricValue(trial.metrics, "epochs_run");
  if (trial.status === "pruned" && typeof epochs === "number") return `pruned (epoch ${epochs})`;
  return trial.status ?? "";
}
