// The best architecture (#best-architecture): the best trial's levels as rows of unit
// boxes, each box showing the unit's neuron count, and its other hyperparameters.

import { el, formatNumber } from "./dom.js";

/** Parameters that are bookkeeping, not the architecture's hyperparameters. */
const NOT_HYPERPARAMETERS = new Set(["levels", "artifact", "index", "seed"]);

/** Renders `trial` (or a placeholder when null) into `root`. */
export function drawArchitecture(root, trial, objective) {
  root.replaceChildren();
  const levels = trial?.parameters?.levels;
  if (!trial || !Array.isArray(levels)) {
    root.append(el("p", { class: "muted" }, "No best trial yet."));
    return;
  }
  const value = trial.metrics?.[objective];
  root.append(
    el(
      "p",
      { class: "muted small" },
      `trial ${trial.index} (${trial.trial_id}) · ${objective} ${formatNumber(value)}`,
    ),
  );
  const diagram = el("ol", { class: "levels", "aria-label": "levels, input side first" });
  levels.forEach((level, i) => {
    const units = Array.isArray(level) ? level : [level];
    diagram.append(
      el(
        "li",
        { class: "level" },
        el("span", { class: "level-name" }, `level ${i + 1}`),
        el(
          "span",
          { class: "units" },
          units.map((neurons, j) =>
            el("span", { class: "unit", title: `unit ${j + 1}: ${neurons} neurons` }, String(neurons)),
          ),
        ),
        el("span", { class: "muted small" }, `${units.length} unit${units.length === 1 ? "" : "s"}`),
      ),
    );
  });
  root.append(diagram);

  const rest = Object.entries(trial.parameters).filter(([key]) => !NOT_HYPERPARAMETERS.has(key));
  if (rest.length) {
    root.append(
      el(
        "dl",
        { class: "params" },
        rest.map(([key, v]) =>
          el("div", {}, el("dt", {}, key), el("dd", {}, paramText(v))),
        ),
      ),
    );
  }
}

/** A hyperparameter's value as text. */
function paramText(value) {
  if (typeof value === "number") return formatNumber(value);
  return typeof value === "string" ? value : JSON.stringify(value);
}
