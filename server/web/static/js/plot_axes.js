// Axes for the Plots tab's SVG charts: numeric or category axes as a plotly layout describes
// them (title, range, autorange "reversed", tickvals/ticktext), scales, ticks and the frame.

import { ticks } from "./charts.js";
import { asArray, toNumber } from "./plotly_data.js";
import { fmtNumber, s } from "./util.js";

export const W = 640, H = 320;

// An axis title as plotly allows it: "text", {text: "text"} or nothing.
export function titleText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return titleText(value.text);
  return String(value);
}

export function figureTitle(layout) {
  return titleText((layout || {}).title);
}

// Values that are not all numbers make a category axis (as plotly's axis autotype does).
export function isCategorical(values, axis = {}) {
  if (axis.type === "category" || axis.type === "multicategory") return true;
  if (axis.type === "linear" || axis.type === "log") return false;
  return values.some((v) => v !== null && v !== undefined && v !== "" && toNumber(v) === null);
}

// An axis: kind "category" (values placed at 0, 1, 2... in order of first appearance) or
// "linear"; `position(v)` maps a data value to the axis' number line.
export function makeAxis(values, axis = {}) {
  if (isCategorical(values, axis)) {
    const labels = [];
    const index = new Map();
    for (const v of values) {
      const key = String(v);
      if (!index.has(key)) { index.set(key, labels.length); labels.push(key); }
    }
    return { kind: "category", labels, position: (v) => (index.has(String(v)) ? index.get(String(v)) : null), spec: axis };
  }
  if (axis.type === "log") {
    return { kind: "log", position: (v) => { const n = toNumber(v); return n !== null && n > 0 ? Math.log10(n) : null; }, spec: axis };
  }
  return { kind: "linear", position: toNumber, spec: axis };
}

// A log axis is laid out in decades (plotly gives its range in log10 units as well).
function logTicks(lo, hi, count) {
  const out = ticks(lo, hi, count).filter((k) => Number.isInteger(k));
  return (out.length ? out : ticks(lo, hi, count)).map((at) => ({ at, label: fmtNumber(10 ** at) }));
}

// The number-line extent an axis shows: the layout's range when it gives one, else the data's.
export function extentOf(axis, positions, { pad = 0.05, include = [] } = {}) {
  const range = asArray(axis.spec.range).map(toNumber);
  if (axis.kind !== "category" && range.length === 2 && range.every((v) => v !== null) && range[0] !== range[1]) {
    return range[0] < range[1] ? range : [range[1], range[0]];
  }
  let lo = Infinity, hi = -Infinity;
  for (const v of [...positions, ...include]) if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === Infinity) return [0, 1];
  if (axis.kind === "category") return [lo - 0.5, hi + 0.5];
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.5, hi + (Math.abs(hi) || 1) * 0.5];
  const margin = (hi - lo) * pad;
  return [lo - margin, hi + margin];
}

// A scale from [lo, hi] onto pixels [a, b]; a reversed axis swaps the ends.
export function scale([lo, hi], [a, b], reversed = false) {
  const [p0, p1] = reversed ? [b, a] : [a, b];
  return (v) => p0 + ((v - lo) / (hi - lo || 1)) * (p1 - p0);
}

export function isReversed(spec) {
  return (spec || {}).autorange === "reversed";
}

// [{at, label}] for an axis over [lo, hi]: the layout's tickvals/ticktext, category labels
// (thinned to about `count`), or round numbers.
export function axisTicks(axis, [lo, hi], count) {
  const vals = asArray(axis.spec.tickvals), texts = asArray(axis.spec.ticktext);
  if (vals.length) {
    return vals.map((v, i) => ({ at: axis.position(v), label: i < texts.length ? String(texts[i]) : String(v) }))
      .filter((t) => t.at !== null && t.at >= lo && t.at <= hi);
  }
  if (axis.kind === "category") {
    const step = Math.max(1, Math.ceil(axis.labels.length / count));
    return axis.labels.map((label, at) => ({ at, label })).filter((t) => t.at % step === 0);
  }
  if (axis.kind === "log") return logTicks(lo, hi, count);
  return ticks(lo, hi, count).map((at) => ({ at, label: fmtNumber(at) }));
}

function shorten(label, max = 14) {
  return label.length > max ? `${label.slice(0, max - 1)}…` : label;
}

// Grid lines, tick labels and axis titles. frame = {left, right, top, bottom} in pixels.
export function drawAxes(svg, frame, x, y) {
  const g = s("g", { class: "axis" });
  for (const t of y.ticks) {
    const py = y.px(t.at);
    g.append(s("line", { x1: frame.left, x2: frame.right, y1: py, y2: py, class: "gridline" }),
      s("text", { x: frame.left - 6, y: py + 4, "text-anchor": "end" }, shorten(t.label, 9)));
  }
  for (const t of x.ticks) {
    const px = x.px(t.at);
    g.append(s("line", { x1: px, x2: px, y1: frame.bottom, y2: frame.bottom + 4, class: "tick" }),
      s("text", { x: px, y: frame.bottom + 16, "text-anchor": "middle" }, shorten(t.label)));
  }
  g.append(s("line", { x1: frame.left, x2: frame.right, y1: frame.bottom, y2: frame.bottom, class: "baseline" }));
  if (x.title) g.append(s("text", { x: (frame.left + frame.right) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, x.title));
  if (y.title) {
    const cy = (frame.top + frame.bottom) / 2;
    g.append(s("text", { x: 12, y: cy, "text-anchor": "middle", class: "label", transform: `rotate(-90 12 ${cy})` }, y.title));
  }
  svg.append(g);
}
