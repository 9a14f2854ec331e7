// The page's two charts, drawn as plain SVG: the objective per trial with the best-so-far
// line, and one trial's learning curves. Colours come from classes styled in app.css
// (the CSP forbids inline style attributes), so both themes apply to the charts too.

import { svg, formatNumber } from "./dom.js";

const MARGIN = { top: 14, right: 18, bottom: 40, left: 58 };

/**
 * The drawing size in CSS pixels: the <svg>'s width on screen (so text keeps its size on a
 * phone), with a height in proportion, within bounds.
 */
function size(root) {
  const width = Math.round(root.getBoundingClientRect().width) || 640;
  return { width, height: Math.round(Math.min(320, Math.max(220, width * 0.5))) };
}

/** About `count` round tick values covering [min, max] (1, 2, 5 × 10^k steps). */
function ticks(min, max, count = 5) {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** [lo, hi] padded by 5% (or ±1 around a single value). */
function extent(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

/** A linear scale from [d0, d1] to [r0, r1]. */
function scale([d0, d1], [r0, r1]) {
  return (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
}

/** Sets up `root` (an <svg>) and draws axes; returns the x and y scales. */
function frame(root, { xDomain, yDomain, xTicks, xLabel, yLabel }) {
  const { width, height } = size(root);
  root.replaceChildren();
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const x = scale(xDomain, [MARGIN.left, width - MARGIN.right]);
  const y = scale(yDomain, [height - MARGIN.bottom, MARGIN.top]);
  const axes = svg("g", { class: "axes" });
  const bottom = height - MARGIN.bottom;
  const right = width - MARGIN.right;
  const middle = (MARGIN.top + bottom) / 2;
  for (const v of ticks(yDomain[0], yDomain[1], height < 260 ? 4 : 5)) {
    axes.append(
      svg("line", { class: "grid", x1: MARGIN.left, x2: right, y1: y(v), y2: y(v) }),
      svg(
        "text",
        { class: "tick", x: MARGIN.left - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle" },
        formatNumber(v),
      ),
    );
  }
  for (const v of xTicks) {
    axes.append(
      svg("line", { class: "tick-mark", x1: x(v), x2: x(v), y1: bottom, y2: bottom + 4 }),
      svg("text", { class: "tick", x: x(v), y: bottom + 16, "text-anchor": "middle" }, formatNumber(v)),
    );
  }
  axes.append(
    svg("line", { class: "axis", x1: MARGIN.left, x2: right, y1: bottom, y2: bottom }),
    svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: bottom }),
    svg("text", { class: "axis-label", x: (MARGIN.left + right) / 2, y: height - 6, "text-anchor": "middle" }, xLabel),
    svg(
      "text",
      { class: "axis-label", x: 14, y: middle, "text-anchor": "middle", transform: `rotate(-90 14 ${middle})` },
      yLabel,
    ),
  );
  root.append(axes);
  return { x, y, right };
}

/** Integer ticks for an index axis [lo, hi], fewer on a narrow chart. */
function indexTicks(root, lo, hi) {
  const most = size(root).width < 480 ? 5 : 8;
  return ticks(lo, hi, Math.min(most, hi - lo || 1)).filter(Number.isInteger);
}

/** A message in the middle of an empty chart. */
function emptyChart(root, message) {
  const { width, height } = size(root);
  root.replaceChildren();
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.append(svg("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, message));
}

/**
 * Draws the objective of each trial (x = index) as `circle.point[data-trial-id]` and the
 * best-so-far step line `path.best-line` (better = higher when `direction` is "maximize").
 * `points` is [{trialId, index, value, status}], `selected` a trial id, `onPick(trialId)`
 * is called when a point is clicked.
 */
export function drawObjective(root, { points, objective, direction, selected, onPick }) {
  const usable = points.filter((p) => Number.isFinite(p.value)).sort((a, b) => a.index - b.index);
  if (!usable.length) {
    emptyChart(root, "No finished trial yet");
    root.append(svg("path", { class: "best-line", d: "" }));
    return;
  }
  const indexes = usable.map((p) => p.index);
  const lo = Math.min(...indexes);
  const hi = Math.max(...indexes);
  const pad = Math.max(0.5, (hi - lo) * 0.04);
  const xDomain = [lo - pad, hi + pad];
  const { x, y, right } = frame(root, {
    xDomain,
    yDomain: extent(usable.map((p) => p.value)),
    xTicks: indexTicks(root, Math.ceil(xDomain[0]), Math.floor(xDomain[1])),
    xLabel: "trial index",
    yLabel: objective,
  });

  const better = direction === "minimize" ? (a, b) => a < b : (a, b) => a > b;
  let best = null;
  const steps = [];
  for (const p of usable) {
    if (best === null || better(p.value, best)) best = p.value;
    steps.push(steps.length ? `H${x(p.index)} V${y(best)}` : `M${x(p.index)} ${y(best)}`);
  }
  steps.push(`H${right}`);
  root.append(svg("path", { class: "best-line", d: steps.join(" ") }));

  for (const p of usable) {
    const isBest = p.value === best;
    const circle = svg(
      "circle",
      {
        class: `point${isBest ? " best" : ""}${p.trialId === selected ? " selected" : ""}`,
        cx: x(p.index),
        cy: y(p.value),
        r: p.trialId === selected ? 7 : 5,
        "data-trial-id": p.trialId,
        tabindex: 0,
        role: "button",
        "aria-label": `trial ${p.index}: ${objective} ${formatNumber(p.value)}`,
      },
      svg("title", {}, `trial ${p.index} (${p.trialId}): ${formatNumber(p.value)}`),
    );
    circle.addEventListener("click", () => onPick(p.trialId));
    circle.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onPick(p.trialId);
      }
    });
    root.append(circle);
  }
}

/**
 * Draws learning curves: `curves` is {name: [value | null per epoch]}; one
 * `path.curve[data-curve=name]` per series (a null breaks the line), epochs from 1.
 * The legend goes into `legend` (an HTML element).
 */
export function drawCurves(root, legend, curves) {
  const series = Object.entries(curves ?? {}).filter(([, values]) => Array.isArray(values) && values.length);
  legend.replaceChildren();
  const finite = series.flatMap(([, values]) => values.filter(Number.isFinite));
  if (!finite.length) {
    emptyChart(root, "No learning curve recorded for this trial");
    return;
  }
  const epochs = Math.max(...series.map(([, values]) => values.length));
  const { x, y } = frame(root, {
    xDomain: [1 - Math.max(0.2, epochs * 0.02), epochs + Math.max(0.2, epochs * 0.02)],
    yDomain: extent(finite),
    xTicks: indexTicks(root, 1, epochs),
    xLabel: "epoch",
    yLabel: "value",
  });
  series.forEach(([name, values], i) => {
    const colour = `series-${i % 6}`;
    const d = [];
    let pen = "M";
    values.forEach((v, epoch) => {
      if (!Number.isFinite(v)) {
        pen = "M";
        return;
      }
      d.push(`${pen}${x(epoch + 1)} ${y(v)}`);
      pen = "L";
    });
    root.append(svg("path", { class: `curve ${colour}`, "data-curve": name, d: d.join(" ") }));
    if (values.length <= 40) {
      values.forEach((v, epoch) => {
        if (Number.isFinite(v)) {
          root.append(svg("circle", { class: `marker ${colour}`, cx: x(epoch + 1), cy: y(v), r: 2.5 }));
        }
      });
    }
    const key = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${colour}`;
    key.append(swatch, document.createTextNode(name));
    legend.append(key);
  });
}
