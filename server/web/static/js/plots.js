// Plots tab (events.get_task_plots: Plotly JSON, drawn here without Plotly: scatter/line traces
// as line charts, bar/histogram traces as bar charts, tables as tables, anything else as its JSON)
// and Debug images tab (events.debug_images: the latest iterations of each metric's images;
// HTML debug samples, ClearML's report_media of an .html file, in a sandboxed iframe).

import { call, fileHref } from "./api.js";
import { RUNNING, every, h } from "./util.js";
import { barChart, lineChart } from "./charts.js";

function numbers(values) {
  return (values || []).map((v) => (v === null || v === undefined || v === "" ? null : Number(v)));
}

function histogram(values, bins = 30) {
  const nums = numbers(values).filter((v) => Number.isFinite(v));
  if (!nums.length) return { x: [], y: [] };
  const lo = Math.min(...nums), hi = Math.max(...nums), width = (hi - lo) / bins || 1;
  const y = new Array(bins).fill(0);
  for (const v of nums) y[Math.min(bins - 1, Math.floor((v - lo) / width))] += 1;
  return { x: y.map((_, i) => Number((lo + width * (i + 0.5)).toPrecision(4))), y };
}

function tableTrace(trace) {
  const header = ((trace.header || {}).values || []).map((v) => String(Array.isArray(v) ? v.join(" ") : v));
  const columns = (trace.cells || {}).values || [];
  const rows = columns.length ? columns[0].map((_, i) => columns.map((col) => col[i])) : [];
  return h("table", { class: "grid compact" }, h("thead", {}, h("tr", {}, header.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c ?? ""))))));
}

export function renderPlot(title, figure) {
  const traces = figure.data || [];
  const layout = figure.layout || {};
  const axisTitle = (axis) => (typeof (axis || {}).title === "string" ? axis.title : ((axis || {}).title || {}).text) || "";
  const xLabel = axisTitle(layout.xaxis);
  const lines = [], bars = [], other = [];
  traces.forEach((tr, i) => {
    const name = tr.name || `series ${i + 1}`;
    const type = tr.type || "scatter";
    if (type === "scatter" || type === "scattergl") {
      const y = numbers(tr.y);
      const x = tr.x ? numbers(tr.x) : [];
      lines.push({ name, x: x.length && x.every((v) => Number.isFinite(v)) ? x : y.map((_, j) => j), y });
    } else if (type === "bar") {
      bars.push({ name, x: tr.x || (tr.y || []).map((_, j) => j), y: numbers(tr.y) });
    } else if (type === "histogram") {
      bars.push({ name, ...histogram(tr.x || tr.y) });
    } else if (type === "table") {
      other.push(tableTrace(tr));
    } else {
      other.push(h("details", {}, h("summary", {}, `${type} trace “${name}” (not drawn here)`),
        h("pre", { class: "code" }, JSON.stringify(tr, null, 1).slice(0, 20000))));
    }
  });
  const figures = [];
  if (lines.length) figures.push(lineChart(title, lines, { xLabel: xLabel || "x" }));
  if (bars.length) figures.push(barChart(title, bars, { xLabel }));
  if (!figures.length && other.length) figures.push(h("figure", { class: "chart" }, h("figcaption", {}, title), other));
  else if (other.length) figures.push(...other);
  return figures;
}

export async function plotsTab(body, ctx) {
  const grid = h("div", { class: "charts", id: "plots" });
  body.append(grid);
  let lastJson = "";
  async function load() {
    const data = await call("events.get_task_plots", { task: ctx.task.id, iters: 1, batch_size: 200 });
    const json = JSON.stringify(data.plots || []);
    if (json === lastJson) return;
    lastJson = json;
    const plots = (data.plots || []).slice().sort((a, b) => `${a.metric}/${a.variant}`.localeCompare(`${b.metric}/${b.variant}`));
    grid.replaceChildren(...(plots.length ? plots.flatMap((p) => {
      let figure;
      try { figure = JSON.parse(p.plot_str || "{}"); } catch (_) { figure = {}; }
      return renderPlot(`${p.metric} / ${p.variant} (iter ${p.iter})`, figure);
    }) : [h("p", { class: "muted" }, "No plots reported.")]));
  }
  await load();
  const stop = every(5000, async () => { if (RUNNING.has(ctx.task.status)) await load(); });
  return { stop };
}

const HTML_SAMPLE = /\.html?$/i;

// An HTML sample is anyone's content, shown to whoever opens the task: it renders in an iframe
// with an empty sandbox (no scripts, forms, popups or navigation of this page, and an opaque
// origin: it can neither read this page nor send its cookie). Scripts stay off, rather than
// allow-scripts without allow-same-origin, because nothing here needs them and a running
// script could still freeze the tab or draw a fake sign-in box. /files serves the file under a
// `sandbox` CSP as well, so the "open" link shows it just as inert.
function sampleView(e, href) {
  const alt = `${e.metric} ${e.variant}`;
  if (!href) return h("code", {}, e.url || e.key || "");
  if (HTML_SAMPLE.test(href.split("?")[0])) {
    return h("iframe", { class: "sample", src: href, sandbox: "", title: alt, loading: "lazy", referrerpolicy: "no-referrer" });
  }
  return h("a", { href, target: "_blank", rel: "noopener" }, h("img", { src: href, alt, loading: "lazy" }));
}

export async function imagesTab(body, ctx) {
  const box = h("div", { id: "debug_images" });
  body.append(box);
  let lastJson = "";
  async function load() {
    const data = await call("events.debug_images", { metrics: [{ task: ctx.task.id }], iters: 3 });
    const json = JSON.stringify(data.metrics || []);
    if (json === lastJson) return;
    lastJson = json;
    const events = (data.metrics || []).flatMap((m) => (m.iterations || []).flatMap((it) => it.events || []));
    const byMetric = new Map();
    for (const e of events) {
      if (!byMetric.has(e.metric)) byMetric.set(e.metric, []);
      byMetric.get(e.metric).push(e);
    }
    box.replaceChildren(...(byMetric.size ? [...byMetric.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([metric, list]) =>
      h("section", { class: "card wide" }, h("h3", {}, metric), h("div", { class: "images" }, list.map((e) => {
        const href = fileHref(e.url);
        const html = Boolean(href) && HTML_SAMPLE.test(href.split("?")[0]);
        return h("figure", { class: html ? "image html" : "image" }, sampleView(e, href),
          h("figcaption", {}, `${e.variant} · iter ${e.iter}`,
            html ? [" · ", h("a", { href, target: "_blank", rel: "noopener" }, "open")] : null));
      })))) : [h("p", { class: "muted" }, "No debug images reported.")]));
  }
  await load();
  const stop = every(5000, async () => { if (RUNNING.has(ctx.task.status)) await load(); });
  return { stop };
}
