// One reported plot (a plotly figure as the SDK sent it) as panels for the Plots tab: the
// scatter/bar/histogram traces share one x/y chart; each heatmap, surface, contour, table and
// image trace gets its own panel, and so do the figure's layout images. A trace of a type not
// drawn here gets a "not drawn here: <type>" panel with its JSON; a trace or chart that cannot
// be drawn gets a panel saying why. Nothing one plot holds can blank the others.

import { fileHref } from "./api.js";
import { asArray, decodeFigure, matrix, toNumber } from "./plotly_data.js";
import { GRID_TYPES, heatmapChart } from "./plot_heatmap.js";
import { XY_TYPES, xyChart } from "./plot_xy.js";
import { h } from "./util.js";

function panel(title, kind, type, ...children) {
  return h("figure", { class: `chart plot plot-${kind}`, "data-metric": title, "data-kind": kind, "data-trace-type": type },
    h("figcaption", {}, title), ...children);
}

export function errorPanel(title, what, err) {
  console.warn(`plot ${title}: ${what}:`, err);
  return panel(title, "error", what, h("div", { class: "error-box", role: "alert" },
    `could not draw ${what}: ${err && err.message ? err.message : err}`));
}

function fallbackPanel(title, trace) {
  const type = String(trace.type);
  return panel(title, "fallback", type, h("p", { class: "muted not-drawn" }, `not drawn here: ${type}`),
    h("details", {}, h("summary", {}, "trace JSON"), h("pre", { class: "code" }, JSON.stringify(trace, null, 1).slice(0, 20000))));
}

function cellLabel(value) {
  if (Array.isArray(value)) return value.map(cellLabel).join(" ");
  return value === null || value === undefined ? "" : String(value);
}

// A table trace: header.values (one per column, each a label or a list of label lines) and
// cells.values (the columns).
function tablePanel(title, trace) {
  const header = asArray((trace.header || {}).values).map(cellLabel);
  const columns = asArray((trace.cells || {}).values).map(asArray);
  const rows = columns.reduce((n, c) => Math.max(n, c.length), 0);
  const body = Array.from({ length: rows }, (_, i) => h("tr", {}, columns.map((col) => h("td", {}, cellLabel(col[i])))));
  return panel(title, "table", "table", h("div", { class: "plot-table" }, h("table", { class: "grid compact" },
    header.length ? h("thead", {}, h("tr", {}, header.map((c) => h("th", {}, c)))) : null, h("tbody", {}, body))));
}

// A picture the page may show: inline data, or a file this server's files listener holds.
function imageSource(source) {
  if (typeof source !== "string") return null;
  if (/^data:image\/(png|jpe?g|gif|webp|bmp);base64,/i.test(source)) return source;
  return fileHref(source);
}

function pictureOf(source, alt) {
  const src = imageSource(source);
  if (!src) return h("p", { class: "muted" }, `image not shown (not on this server): ${String(source).slice(0, 200)}`);
  return h("img", { class: "plot-image", src, alt, loading: "lazy" });
}

// An image trace's z: rows of [r, g, b(, a)] pixels (colormodel rgb/rgba), drawn on a canvas.
function pixelsToDataUrl(trace) {
  const rows = matrix(trace.z);
  const height = rows.length, width = rows.reduce((n, r) => Math.max(n, r.length), 0);
  if (!height || !width) throw new Error("image trace without source or z");
  const canvas = h("canvas", { width, height });
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  rows.forEach((row, i) => row.forEach((px, j) => {
    const [r, g, b, a] = asArray(px).map(toNumber);
    const k = (i * width + j) * 4;
    [img.data[k], img.data[k + 1], img.data[k + 2]] = [r ?? 0, g ?? r ?? 0, b ?? r ?? 0];
    img.data[k + 3] = a === null || a === undefined ? 255 : a <= 1 && String(trace.colormodel).endsWith("a") ? a * 255 : a;
  }));
  ctx.putImageData(img, 0, 0);
  return canvas.toDataURL();
}

function imageTracePanel(title, trace) {
  const source = typeof trace.source === "string" ? trace.source : pixelsToDataUrl(trace);
  return panel(title, "image", "image", pictureOf(source, title));
}

function layoutImagesPanel(title, images) {
  return panel(title, "image", "layout.images", images.map((im) => pictureOf((im || {}).source, title)));
}

function drawTrace(title, trace, layout) {
  if (GRID_TYPES.has(trace.type)) return heatmapChart(title, trace, layout);
  if (trace.type === "table") return tablePanel(title, trace);
  if (trace.type === "image") return imageTracePanel(title, trace);
  return fallbackPanel(title, trace);
}

function guarded(title, what, draw) {
  try {
    return draw();
  } catch (err) {
    return errorPanel(title, what, err);
  }
}

function decodedLayout(figure) {
  try {
    return decodeFigure(figure.layout || {});
  } catch (_) {
    return {};
  }
}

// figure: {data: [...traces], layout: {...}} as parsed from the event's plot_str.
export function renderFigure(title, figure) {
  const layout = decodedLayout(figure || {});
  const xy = [], panels = [];
  asArray((figure || {}).data).forEach((raw, i) => {
    const type = (raw && raw.type) || "scatter";
    const trace = guarded(title, `trace ${i + 1} (${type})`, () => ({ ...decodeFigure(raw), type }));
    if (trace instanceof Element) panels.push(trace);
    else if (XY_TYPES.has(type)) xy.push(trace);
    else panels.push(guarded(title, type, () => drawTrace(title, trace, layout)));
  });
  if (xy.length) panels.unshift(guarded(title, xy.map((t) => t.type).join("+"), () => xyChart(title, xy, layout)));
  const images = asArray(layout.images).filter((im) => im && im.source);
  if (images.length) panels.push(guarded(title, "layout images", () => layoutImagesPanel(title, images)));
  if (!panels.length) panels.push(panel(title, "empty", "", h("p", { class: "muted" }, "This figure has no data.")));
  return panels;
}
