// Charts drawn as inline SVG: lineChart (one line per series, x = iteration) with axes, a
// legend that toggles series, and a hover readout; barChart for histograms and bar plots.
// lineChart options: logY (log10 y axis; values <= 0 are left out), xFormat (x tick and readout
// labels, e.g. clock times), and a series' `color` (an index into COLORS, so a task keeps one
// colour across charts).
// No library: the page must work without reaching any CDN.

import { fill, fmtNumber, h, s } from "./util.js";

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#475569", "#ea580c"];
const W = 640, H = 300, M = { left: 58, right: 16, top: 12, bottom: 34 };

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
}

export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function extent(values, pad) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.5, hi + (Math.abs(hi) || 1) * 0.5];
  const margin = pad ? (hi - lo) * 0.05 : 0;
  return [lo - margin, hi + margin];
}

// Log axes (values are log10): ticks at 1, 2 and 5 times the powers of ten in range, only the
// powers when those are too many, labelled with the values themselves.
function logTicks(lo, hi) {
  const pick = (mults) => {
    const out = [];
    for (let k = Math.floor(lo); k <= Math.ceil(hi); k += 1) {
      for (const m of mults) { const t = k + Math.log10(m); if (t >= lo - 1e-9 && t <= hi + 1e-9) out.push(t); }
    }
    return out;
  };
  const fine = pick([1, 2, 5]);
  if (fine.length <= 8) return fine.length >= 2 ? fine : ticks(lo, hi);
  const powers = pick([1]);
  const step = Math.ceil(powers.length / 8);
  return powers.filter((_, i) => i % step === 0);
}

function axes(svg, xs, ys, xLabel, opts = {}) {
  const [x0, x1] = xs, [y0, y1] = ys;
  const xText = opts.xFormat || fmtNumber;
  const yText = opts.logY ? (t) => fmtNumber(Number((10 ** t).toPrecision(6))) : fmtNumber;
  const px = (x) => M.left + ((x - x0) / (x1 - x0 || 1)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - M.top - M.bottom);
  const grid = s("g", { class: "axis" });
  for (const t of (opts.logY ? logTicks : ticks)(y0, y1)) {
    grid.append(s("line", { x1: M.left, x2: W - M.right, y1: py(t), y2: py(t), class: "gridline" }),
      s("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end" }, yText(t)));
  }
  for (const t of ticks(x0, x1, 6)) {
    grid.append(s("line", { x1: px(t), x2: px(t), y1: H - M.bottom, y2: H - M.bottom + 4, class: "tick" }),
      s("text", { x: px(t), y: H - M.bottom + 16, "text-anchor": "middle" }, xText(t)));
  }
  grid.append(s("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "baseline" }),
    s("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, xLabel));
  svg.append(grid);
  return { px, py };
}

const log10 = (v) => (v !== null && Number.isFinite(v) && v > 0 ? Math.log10(v) : null);

// series: [{name, x: [...], y: [...], color?}]
export function lineChart(title, series, { xLabel = "iteration", id, logY = false, xFormat = null } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title,
    "data-log": logY ? "1" : null });
  const plotted = series.map((d) => (logY ? d.y.map(log10) : d.y));
  const tone = (d, i) => (Number.isInteger(d.color) ? d.color : i) % COLORS.length;
  const allX = series.flatMap((d) => d.x), allY = plotted.flat();
  const { px, py } = axes(svg, extent(allX, false), extent(allY, true), xLabel, { logY, xFormat });
  const hidden = new Set();
  const lines = series.map((d, i) => {
    const color = COLORS[tone(d, i)];
    let path = "", pen = false;
    d.x.forEach((x, j) => {
      const y = plotted[i][j];
      if (y === null || !Number.isFinite(y)) { pen = false; return; }
      path += `${pen ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`;
      pen = true;
    });
    const g = s("g", { class: "series", "data-series": d.name },
      s("path", { d: path, stroke: color, fill: "none", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
    if (d.x.length <= 40) {
      d.x.forEach((x, j) => { if (plotted[i][j] !== null && Number.isFinite(plotted[i][j])) g.append(s("circle", { cx: px(x), cy: py(plotted[i][j]), r: 2.5, fill: color })); });
    }
    svg.append(g);
    return g;
  });
  const cursor = s("line", { class: "cursor", y1: M.top, y2: H - M.bottom, visibility: "hidden" });
  const overlay = s("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom, class: "overlay" });
  svg.append(cursor, overlay);
  const readout = h("div", { class: "readout", hidden: true });

  overlay.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const sx = ((ev.clientX - box.left) / box.width) * W;
    let best = null;
    series.forEach((d, i) => {
      if (hidden.has(i)) return;
      d.x.forEach((x, j) => {
        const dist = Math.abs(px(x) - sx);
        if (d.y[j] !== null && (!best || dist < best.dist)) best = { dist, x };
      });
    });
    if (!best) return;
    cursor.setAttribute("x1", px(best.x)); cursor.setAttribute("x2", px(best.x));
    cursor.setAttribute("visibility", "visible");
    readout.hidden = false;
    fill(readout, h("strong", {}, `${xLabel} ${(xFormat || fmtNumber)(best.x)}`),
      ...series.map((d, i) => {
        const j = d.x.indexOf(best.x);
        return hidden.has(i) || j < 0 ? null : h("div", {}, h("span", { class: "swatch", "data-color": tone(d, i) }),
          `${d.name}: ${fmtNumber(d.y[j])}`);
      }));
  });
  overlay.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); readout.hidden = true; });

  const legend = h("div", { class: "legend" }, series.map((d, i) => h("button", {
    class: "legend-item", type: "button", "data-color": tone(d, i),
    onclick: (ev) => {
      if (hidden.has(i)) hidden.delete(i); else hidden.add(i);
      lines[i].setAttribute("visibility", hidden.has(i) ? "hidden" : "visible");
      ev.currentTarget.classList.toggle("off", hidden.has(i));
    } }, h("span", { class: "swatch", "data-color": tone(d, i) }), d.name)));
  return h("figure", { class: "chart", "data-metric": title, id }, h("figcaption", {}, title), svg, legend, readout);
}

// bars: [{name, x: [labels or numbers], y: [...]}], drawn side by side per x.
export function barChart(title, bars, { xLabel = "" } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title });
  const labels = [...new Set(bars.flatMap((b) => b.x.map(String)))];
  const [y0, y1] = extent([0, ...bars.flatMap((b) => b.y)], false);
  const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - M.top - M.bottom);
  const slot = (W - M.left - M.right) / Math.max(1, labels.length);
  const width = Math.max(1, (slot * 0.8) / Math.max(1, bars.length));
  const g = s("g", { class: "axis" });
  for (const t of ticks(y0, y1)) {
    g.append(s("line", { x1: M.left, x2: W - M.right, y1: py(t), y2: py(t), class: "gridline" }),
      s("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end" }, fmtNumber(t)));
  }
  const every = Math.ceil(labels.length / 12);
  labels.forEach((label, i) => {
    if (i % every === 0) g.append(s("text", { x: M.left + slot * (i + 0.5), y: H - M.bottom + 16, "text-anchor": "middle" }, label));
  });
  g.append(s("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, xLabel));
  svg.append(g);
  bars.forEach((b, k) => {
    const color = COLORS[k % COLORS.length];
    b.x.forEach((x, j) => {
      const i = labels.indexOf(String(x));
      const y = b.y[j];
      if (!Number.isFinite(y)) return;
      svg.append(s("rect", { x: M.left + slot * i + slot * 0.1 + width * k, y: Math.min(py(y), py(0)),
        width, height: Math.abs(py(0) - py(y)), fill: color }, s("title", {}, `${b.name} ${x}: ${fmtNumber(y)}`)));
    });
  });
  const legend = bars.length > 1 ? h("div", { class: "legend" }, bars.map((b, k) =>
    h("span", { class: "legend-item" }, h("span", { class: "swatch", "data-color": k % COLORS.length }), b.name))) : null;
  return h("figure", { class: "chart", "data-metric": title }, h("figcaption", {}, title), svg, legend);
}
