// DOM and formatting helpers shared by the page's modules.
//
// Every string shown on the page comes from the API and is user-controlled, so the page
// builds its DOM only through `el()` / `textContent` / `setAttribute`; nothing here (or
// anywhere in the page) parses HTML from data.

/**
 * Creates an element. `attrs` values go through setAttribute (`class` included); `null`,
 * `undefined` and `false` values are skipped. Children are nodes or strings (as text).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Creates an SVG element, like `el()`. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A number for a table cell: up to 4 significant digits, "–" when missing. */
export function formatNumber(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

/** A duration in milliseconds as "850 ms", "12.3 s", "4 m 05 s" or "2 h 03 m". */
export function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.floor(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} m ${String(whole % 60).padStart(2, "0")} s`;
  const m = Math.floor(whole / 60);
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
}

/** Milliseconds between two RFC 3339 times (`end` null: until now); null if unknown. */
export function elapsedMs(start, end) {
  const t0 = Date.parse(start ?? "");
  if (Number.isNaN(t0)) return null;
  const t1 = end ? Date.parse(end) : Date.now();
  return Number.isNaN(t1) ? null : Math.max(0, t1 - t0);
}

/** An RFC 3339 time as a short local date and time, "–" when missing. */
export function formatTime(iso) {
  const t = Date.parse(iso ?? "");
  if (Number.isNaN(t)) return "–";
  return new Date(t).toLocaleString(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  });
}

/** The numeric value of `metrics[name]`, or null. */
export function metricValue(metrics, name) {
  const value = metrics && typeof metrics === "object" ? metrics[name] : undefined;
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** A CSS class for a run or trial status ("status status-running"). */
export function statusClass(status) {
  const known = /^[a-z]+$/.test(String(status)) ? status : "unknown";
  return `status status-${known}`;
}
