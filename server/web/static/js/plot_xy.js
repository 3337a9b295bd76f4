// The Plots tab's x/y chart: every scatter, bar and histogram trace of one figure on shared
// axes, as the figure says: scatter modes (lines, markers, text and their mixes), grouped or
// stacked bars, horizontal bars (orientation "h"), histograms binned here, category axes,
// the layout's axis titles, ranges and tick labels. A 3-D scatter is shown from above (x/y).

import { COLORS } from "./charts.js";
import { asArray, toNumber } from "./plotly_data.js";
import { colorScale, cssColor, rgbText } from "./plot_colors.js";
import { H, W, axisTicks, drawAxes, extentOf, isReversed, makeAxis, scale, titleText } from "./plot_axes.js";
import { fill, fmtNumber, h, s } from "./util.js";

export const XY_TYPES = new Set(["scatter", "scattergl", "scatter3d", "bar", "histogram"]);
const FRAME = { left: 64, right: W - 16, top: 12, bottom: H - 42 };
const MAX_MARKERS = 5000;
let clipIds = 0;

function traceColor(tr, i) {
  const marker = tr.marker || {}, line = tr.line || {};
  const own = typeof marker.color === "string" ? marker.color : line.color;
  return cssColor(own, COLORS[i % COLORS.length]);
}

function scatterSeries(tr) {
  const y = asArray(tr.y);
  let x = asArray(tr.x);
  if (!x.length) x = y.map((_, i) => (toNumber(tr.x0) ?? 0) + (toNumber(tr.dx) ?? 1) * i);
  const fallback = tr.type === "scatter3d" ? "markers" : x.length <= 20 ? "lines+markers" : "lines";
  const mode = typeof tr.mode === "string" && tr.mode ? tr.mode : fallback;
  return { kind: "scatter", x, y, xs: x, ys: y, mode, text: asArray(tr.text), z: asArray(tr.z) };
}

function barSeries(tr) {
  const horizontal = tr.orientation === "h";
  const val = asArray(horizontal ? tr.x : tr.y);
  let pos = asArray(horizontal ? tr.y : tr.x);
  if (!pos.length) pos = val.map((_, i) => i);
  return { kind: "bar", horizontal, pos, val: val.map(toNumber), xs: horizontal ? val : pos, ys: horizontal ? pos : val };
}

function counts(values) {
  const out = new Map();
  for (const v of values) out.set(String(v), (out.get(String(v)) || 0) + 1);
  return out;
}

// Plotly bins a histogram itself; so does this (equal-width bins, or counts per category).
function histogramSeries(tr) {
  const horizontal = tr.orientation === "h" || (tr.x === undefined && tr.y !== undefined);
  const raw = asArray(horizontal ? tr.y : tr.x).filter((v) => v !== null && v !== undefined && v !== "");
  const nums = raw.map(toNumber);
  let pos, val, width = null;
  if (nums.some((v) => v === null)) {
    const byLabel = counts(raw);
    pos = [...byLabel.keys()];
    val = [...byLabel.values()];
  } else {
    let lo = Infinity, hi = -Infinity;
    for (const v of nums) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const bins = toNumber(horizontal ? tr.nbinsy : tr.nbinsx) || Math.min(40, Math.max(5, Math.ceil(Math.sqrt(nums.length))));
    width = (hi - lo) / bins || 1;
    val = new Array(nums.length ? bins : 0).fill(0);
    for (const v of nums) val[Math.min(bins - 1, Math.floor((v - lo) / width))] += 1;
    pos = val.map((_, i) => lo + width * (i + 0.5));
  }
  return { kind: "bar", horizontal, pos, val, width, xs: horizontal ? val : pos, ys: horizontal ? pos : val };
}

function toSeries(tr, i) {
  const make = tr.type === "bar" ? barSeries : tr.type === "histogram" ? histogramSeries : scatterSeries;
  const name = tr.name === null || tr.name === undefined || tr.name === "" ? `trace ${i + 1}` : String(tr.name);
  return { ...make(tr), name, trace: tr, color: traceColor(tr, i), index: i };
}

function slotWidth(bars, base) {
  const explicit = bars.map((b) => b.width).filter((w) => w);
  if (explicit.length) return Math.min(...explicit);
  if (base.kind === "category") return 1;
  const at = [...new Set(bars.flatMap((b) => b.pos.map(base.position)).filter((p) => p !== null))].sort((a, b) => a - b);
  let gap = Infinity;
  for (let i = 1; i < at.length; i += 1) gap = Math.min(gap, at[i] - at[i - 1]);
  return Number.isFinite(gap) ? gap : 1;
}

// Bars as rectangles in data units: {series, pos, value, x0, x1, y0, y1}.
function barRects(bars, xa, ya, barmode) {
  if (!bars.length) return [];
  const horizontal = bars[0].horizontal;
  const base = horizontal ? ya : xa, value = horizontal ? xa : ya;
  const slot = slotWidth(bars, base);
  const stacked = barmode === "stack" || barmode === "relative";
  const grouped = !stacked && barmode !== "overlay" && bars.length > 1;
  const width = (bars.every((b) => b.width) ? 0.96 : 0.8) * slot / (grouped ? bars.length : 1);
  const ends = new Map();
  return bars.flatMap((b, k) => b.pos.map((p, j) => {
    const at = base.position(p), v = value.position(b.val[j]);
    if (at === null || v === null) return null;
    const center = grouped ? at - (slot * 0.8) / 2 + width * (k + 0.5) : at;
    const key = `${at}/${v < 0 ? "-" : "+"}`;
    const from = stacked ? ends.get(key) || 0 : 0;
    if (stacked) ends.set(key, from + v);
    const [c0, c1] = [center - width / 2, center + width / 2];
    return horizontal ? { series: b, pos: p, value: b.val[j], x0: from, x1: from + v, y0: c0, y1: c1 }
      : { series: b, pos: p, value: b.val[j], x0: c0, x1: c1, y0: from, y1: from + v };
  })).filter(Boolean);
}

function pointColors(tr, n, fallback) {
  const color = (tr.marker || {}).color;
  const list = asArray(Array.isArray(color) || (color && typeof color === "object") ? color : null);
  if (!list.length) return null;
  const nums = list.map(toNumber);
  if (nums.every((v) => v !== null)) {
    const lo = nums.reduce((a, v) => Math.min(a, v)), hi = nums.reduce((a, v) => Math.max(a, v)), paint = colorScale((tr.marker || {}).colorscale);
    return nums.map((v) => rgbText(paint((v - lo) / (hi - lo || 1))));
  }
  return Array.from({ length: n }, (_, j) => cssColor(list[j], fallback));
}

function drawScatter(g, d, px, py, xa, ya, hits) {
  const pts = d.x.map((x, j) => {
    const a = xa.position(x), b = ya.position(d.y[j]);
    return a === null || b === null ? null : { X: px(a), Y: py(b), j };
  });
  if (d.mode.includes("lines")) {
    let path = "", pen = false;
    for (const p of pts) {
      if (!p) { pen = false; continue; }
      path += `${pen ? "L" : "M"}${p.X.toFixed(1)},${p.Y.toFixed(1)}`;
      pen = true;
    }
    const dash = ((d.trace.line || {}).dash || "solid") === "solid" ? null : "6 4";
    g.append(s("path", { d: path, stroke: d.color, fill: "none", "stroke-width": 2, "stroke-dasharray": dash, class: "line" }));
  }
  const colors = pointColors(d.trace, d.x.length, d.color);
  const size = toNumber((d.trace.marker || {}).size);
  const r = size ? Math.min(10, Math.max(2, size / 2)) : 3.5;
  // Tens of thousands of SVG markers would stall the page: past MAX_MARKERS every step-th is drawn.
  const drawn = pts.filter(Boolean);
  const step = Math.ceil(drawn.length / MAX_MARKERS);
  if (step > 1) g.setAttribute("data-marker-step", step);
  for (const p of drawn.filter((_, k) => k % step === 0)) {
    const label = d.text[p.j] === undefined || d.text[p.j] === null ? "" : String(d.text[p.j]);
    const z = d.z.length ? `, z ${fmtNumber(d.z[p.j])}` : "";
    const info = `${d.name}: ${fmtValue(d.x[p.j])}, ${fmtValue(d.y[p.j])}${z}${label ? ` (${label})` : ""}`;
    if (d.mode.includes("markers")) {
      g.append(s("circle", { cx: p.X, cy: p.Y, r, fill: colors ? colors[p.j] : d.color, class: "marker" }, s("title", {}, info)));
    }
    if (d.mode.includes("text") && label) {
      const dy = d.mode.includes("markers") ? -r - 4 : 4;
      g.append(s("text", { x: p.X, y: p.Y + dy, "text-anchor": "middle", class: "point-text" }, label));
    }
    hits.push({ X: p.X, Y: p.Y, info });
  }
}

function fmtValue(v) {
  return typeof v === "number" ? fmtNumber(v) : String(v);
}

function drawBars(groups, rects, px, py, hits) {
  for (const r of rects) {
    const x = Math.min(px(r.x0), px(r.x1)), y = Math.min(py(r.y0), py(r.y1));
    const info = `${r.series.name}: ${fmtValue(r.pos)} → ${fmtNumber(r.value)}`;
    groups.get(r.series).append(s("rect", { x, y, width: Math.abs(px(r.x1) - px(r.x0)), height: Math.abs(py(r.y1) - py(r.y0)),
      fill: r.series.color, class: "bar" }, s("title", {}, info)));
    hits.push({ X: px(r.series.horizontal ? r.x1 : (r.x0 + r.x1) / 2), Y: py(r.series.horizontal ? (r.y0 + r.y1) / 2 : r.y1), info });
  }
}

function legendFor(series, groups) {
  return h("div", { class: "legend" }, series.map((d) => h("button", {
    class: "legend-item", type: "button",
    onclick: (ev) => {
      const g = groups.get(d);
      const off = g.getAttribute("visibility") !== "hidden";
      g.setAttribute("visibility", off ? "hidden" : "visible");
      ev.currentTarget.classList.toggle("off", off);
    } }, s("svg", { width: 12, height: 12, class: "swatch-svg" }, s("rect", { width: 12, height: 12, rx: 2, fill: d.color })), d.name)));
}

function hover(svg, hits) {
  const readout = h("div", { class: "readout", hidden: true });
  const overlay = s("rect", { x: FRAME.left, y: FRAME.top, width: FRAME.right - FRAME.left, height: FRAME.bottom - FRAME.top, class: "overlay" });
  overlay.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const sx = ((ev.clientX - box.left) / box.width) * W, sy = ((ev.clientY - box.top) / box.height) * H;
    let best = null;
    for (const p of hits) {
      const dist = Math.hypot(p.X - sx, p.Y - sy);
      if (dist < 40 && (!best || dist < best.dist)) best = { dist, p };
    }
    readout.hidden = !best;
    if (best) fill(readout, best.p.info);
  });
  overlay.addEventListener("mouseleave", () => { readout.hidden = true; });
  svg.append(overlay);
  return readout;
}

function dataExtents(series, rects, xa, ya) {
  const xs = [], ys = [];
  for (const d of series.filter((e) => e.kind === "scatter")) {
    d.x.forEach((x, j) => { xs.push(xa.position(x)); ys.push(ya.position(d.y[j])); });
  }
  for (const r of rects) { xs.push(r.x0, r.x1); ys.push(r.y0, r.y1); }
  const onlyBars = rects.length && xs.length === rects.length * 2;
  return [extentOf(xa, xs, { pad: onlyBars ? 0.02 : 0.05 }), extentOf(ya, ys, { pad: 0.05 })];
}

// traces: the figure's scatter/bar/histogram traces (arrays already decoded).
export function xyChart(title, traces, layout = {}) {
  const series = traces.map(toSeries);
  const xa = makeAxis(series.flatMap((d) => d.xs), layout.xaxis || {});
  const ya = makeAxis(series.flatMap((d) => d.ys), layout.yaxis || {});
  const rects = barRects(series.filter((d) => d.kind === "bar"), xa, ya, layout.barmode);
  const [xExt, yExt] = dataExtents(series, rects, xa, ya);
  const px = scale(xExt, [FRAME.left, FRAME.right], isReversed(xa.spec));
  const py = scale(yExt, [FRAME.bottom, FRAME.top], isReversed(ya.spec));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title });
  drawAxes(svg, FRAME, { ticks: axisTicks(xa, xExt, 7), px, title: titleText(xa.spec.title) },
    { ticks: axisTicks(ya, yExt, 5), px: py, title: titleText(ya.spec.title) });
  const clip = `plot-clip-${++clipIds}`;
  const groups = new Map(series.map((d) => [d, s("g", { class: "series", "data-series": d.name, "data-mode": d.kind === "bar" ? "bar" : d.mode, "clip-path": `url(#${clip})` })]));
  const hits = [];
  drawBars(groups, rects, px, py, hits);
  for (const d of series.filter((e) => e.kind === "scatter")) drawScatter(groups.get(d), d, px, py, xa, ya, hits);
  svg.append(...groups.values(), s("clipPath", { id: clip }, s("rect", { x: FRAME.left - 6, y: FRAME.top - 6,
    width: FRAME.right - FRAME.left + 12, height: FRAME.bottom - FRAME.top + 12 })));
  const readout = hover(svg, hits);
  const legend = series.length > 1 || layout.showlegend === true ? legendFor(series, groups) : null;
  return h("figure", { class: "chart plot", "data-metric": title, "data-kind": "xy" }, h("figcaption", {}, title), svg, legend, readout);
}
