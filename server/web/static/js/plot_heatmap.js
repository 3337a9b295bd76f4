// The Plots tab's heatmap: a colour grid with the trace's x/y labels, a colour bar, values on
// hover (and written in the cells of a small grid, as a confusion matrix shows them). Surfaces
// and contours are drawn the same way, from their z, with a note saying so.

import { asArray, matrix, toNumber } from "./plotly_data.js";
import { colorScale, rgbText, textOn } from "./plot_colors.js";
import { H, W, axisTicks, drawAxes, isReversed, makeAxis, scale, titleText } from "./plot_axes.js";
import { fill, fmtNumber, h, s } from "./util.js";

export const GRID_TYPES = new Set(["heatmap", "surface", "contour", "heatmapgl", "histogram2d"]);
const FRAME = { left: 78, right: W - 84, top: 12, bottom: H - 42 };
const MAX_RECTS = 10000;  // above this the grid is one image
const BAR = { x: W - 68, width: 14 };

// The labels along one side: the trace's own (a 2-D x/y of a surface gives its first row or
// column), or x0 + i*dx, or the indices.
function sideLabels(values, n, start, step, column) {
  let list = asArray(values);
  if (list.length && Array.isArray(list[0])) list = column ? list.map((row) => asArray(row)[0]) : asArray(list[0]);
  if (list.length >= n) return list.slice(0, n);
  return Array.from({ length: n }, (_, i) => (toNumber(start) ?? 0) + (toNumber(step) ?? 1) * i);
}

function zRange(trace, layout, z) {
  const axis = (layout[trace.coloraxis] || {});
  let lo = toNumber(trace.zmin ?? axis.cmin), hi = toNumber(trace.zmax ?? axis.cmax);
  if (lo === null || hi === null) {
    let a = Infinity, b = -Infinity;
    for (const row of z) for (const v of row) if (v !== null) { a = Math.min(a, v); b = Math.max(b, v); }
    lo = lo ?? (a === Infinity ? 0 : a);
    hi = hi ?? (b === -Infinity ? 1 : b);
  }
  return [lo, hi];
}

function painter(trace, layout, [lo, hi]) {
  const axis = layout[trace.coloraxis] || {};
  const spec = trace.colorscale ?? axis.colorscale ?? ((layout.colorscale || {}).sequential);
  const paint = colorScale(spec, Boolean(trace.reversescale ?? axis.reversescale));
  return (v) => paint((v - lo) / (hi - lo || 1));
}

// What a cell shows as text: the trace's text, or its texttemplate filled in (%{z}, %{x}...).
function cellText(trace, text, template) {
  return (v, i, j, x, y) => {
    const own = text[i] && text[i][j];
    if (!template) return own === undefined || own === null ? "" : String(own);
    return template.replace(/%\{(\w+)[^}]*\}/g, (_, key) => {
      const value = { z: fmtNumber(v), x, y, text: own ?? "" }[key];
      return value === undefined ? "" : String(value);
    });
  };
}

function cellsAsImage(svg, z, paint, cols, reversedY) {
  const canvas = document.createElement("canvas");
  canvas.width = cols;
  canvas.height = z.length;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, z.length);
  z.forEach((row, i) => row.forEach((v, j) => {
    if (v === null) return;
    const k = (i * cols + j) * 4;
    [img.data[k], img.data[k + 1], img.data[k + 2]] = paint(v);
    img.data[k + 3] = 255;
  }));
  ctx.putImageData(img, 0, 0);
  // The image's first row is row 0: at the top when the y axis is reversed, else flipped down.
  const flip = reversedY ? null : `translate(0 ${FRAME.top + FRAME.bottom}) scale(1 -1)`;
  svg.append(s("g", { transform: flip }, s("image", { class: "cells", href: canvas.toDataURL(), x: FRAME.left, y: FRAME.top,
    width: FRAME.right - FRAME.left, height: FRAME.bottom - FRAME.top, preserveAspectRatio: "none", "image-rendering": "pixelated" })));
}

function cellsAsRects(svg, grid, paint, at) {
  const { z, xs, ys, label } = grid;
  const g = s("g", { class: "cells" });
  const cell0 = at(0, 0);
  const writes = z.length * grid.cols <= 900 && cell0.w >= 16 && cell0.h >= 12;
  z.forEach((row, i) => row.forEach((v, j) => {
    if (v === null) return;
    const { x, y, w, h: ht } = at(i, j);
    const color = paint(v);
    g.append(s("rect", { x, y, width: w + 0.5, height: ht + 0.5, fill: rgbText(color), "data-z": v },
      s("title", {}, `${xs[j]}, ${ys[i]}: ${fmtNumber(v)}`)));
    const text = writes ? label(v, i, j, xs[j], ys[i]) : "";
    if (text) g.append(s("text", { x: x + w / 2, y: y + ht / 2 + 4, "text-anchor": "middle", fill: textOn(color), class: "cell-text" }, text));
  }));
  svg.append(g);
}

function colorBar(svg, paint, [lo, hi]) {
  const g = s("g", { class: "colorbar axis" });
  const steps = 48, top = FRAME.top, height = FRAME.bottom - FRAME.top;
  for (let k = 0; k < steps; k += 1) {
    const v = hi - ((k + 0.5) / steps) * (hi - lo);
    g.append(s("rect", { x: BAR.x, y: top + (k * height) / steps, width: BAR.width, height: height / steps + 0.5, fill: rgbText(paint(v)) }));
  }
  const py = scale([lo, hi], [FRAME.bottom, FRAME.top]);
  const axis = makeAxis([], {});
  for (const t of axisTicks(axis, [lo, hi], 5)) {
    g.append(s("text", { x: BAR.x + BAR.width + 4, y: py(t.at) + 4 }, t.label));
  }
  svg.append(g);
}

function hover(svg, grid, at) {
  const readout = h("div", { class: "readout", hidden: true });
  const overlay = s("rect", { x: FRAME.left, y: FRAME.top, width: FRAME.right - FRAME.left, height: FRAME.bottom - FRAME.top, class: "overlay" });
  overlay.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const sx = ((ev.clientX - box.left) / box.width) * W, sy = ((ev.clientY - box.top) / box.height) * H;
    const c0 = at(0, 0);
    const j = Math.floor((sx - FRAME.left) / c0.w);
    const i = grid.z.findIndex((_, r) => { const c = at(r, 0); return sy >= c.y && sy < c.y + c.h; });
    const v = i >= 0 && j >= 0 && j < grid.cols ? grid.z[i][j] : undefined;
    readout.hidden = v === undefined;
    if (v !== undefined) fill(readout, `${grid.xs[j]}, ${grid.ys[i]}: ${fmtNumber(v)}`);
  });
  overlay.addEventListener("mouseleave", () => { readout.hidden = true; });
  svg.append(overlay);
  return readout;
}

function gridOf(trace) {
  const z = matrix(trace.z).map((row) => row.map(toNumber));
  const cols = z.reduce((n, r) => Math.max(n, r.length), 0);
  const xs = sideLabels(trace.x, cols, trace.x0, trace.dx, false);
  const ys = sideLabels(trace.y, z.length, trace.y0, trace.dy, true);
  return { z: z.map((r) => (r.length < cols ? r.concat(new Array(cols - r.length).fill(null)) : r)), cols, xs, ys };
}

function axisSpecs(trace, layout) {
  const scene = trace.type === "surface" ? layout.scene || {} : null;
  return { x: scene ? scene.xaxis || {} : layout.xaxis || {}, y: scene ? scene.yaxis || {} : layout.yaxis || {} };
}

export function heatmapChart(title, trace, layout = {}) {
  const grid = gridOf(trace);
  const specs = axisSpecs(trace, layout);
  // Row 0 at the bottom, as plotly draws a heatmap, unless the y axis is reversed (an image).
  const reversedY = isReversed(specs.y);
  const cw = (FRAME.right - FRAME.left) / Math.max(1, grid.cols), ch = (FRAME.bottom - FRAME.top) / Math.max(1, grid.z.length);
  const at = (i, j) => ({ x: FRAME.left + j * cw, y: reversedY ? FRAME.top + i * ch : FRAME.bottom - (i + 1) * ch, w: cw, h: ch });
  const range = zRange(trace, layout, grid.z);
  const paint = painter(trace, layout, range);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title });
  const xa = makeAxis(grid.xs.map(String), { ...specs.x, type: "category" });
  const ya = makeAxis(grid.ys.map(String), { ...specs.y, type: "category" });
  drawAxes(svg, FRAME, { ticks: axisTicks(xa, [0, grid.cols - 1], 10), px: (k) => FRAME.left + (k + 0.5) * cw, title: titleText(specs.x.title) },
    { ticks: axisTicks(ya, [0, grid.z.length - 1], 8), px: (k) => at(k, 0).y + ch / 2, title: titleText(specs.y.title) });
  grid.label = cellText(trace, matrix(trace.text), typeof trace.texttemplate === "string" ? trace.texttemplate : layout.texttemplate);
  if (grid.z.length * grid.cols > MAX_RECTS) cellsAsImage(svg, grid.z, paint, grid.cols, reversedY);
  else cellsAsRects(svg, grid, paint, at);
  if (trace.showscale !== false || trace.type !== "heatmap") colorBar(svg, paint, range);
  const readout = hover(svg, grid, at);
  const note = trace.type === "heatmap" ? null : h("div", { class: "muted plot-note" }, `${trace.type} drawn as a heatmap`);
  return h("figure", { class: "chart plot", "data-metric": title, "data-kind": "heatmap", "data-trace-type": trace.type },
    h("figcaption", {}, title), svg, note, readout);
}
