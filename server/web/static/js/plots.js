// Plots tab (events.get_task_plots: Plotly JSON as the SDK reported it, drawn here without
// Plotly by plotkinds.js: x/y charts, heatmaps, tables, images, and a "not drawn here" panel
// for any other trace type; each plot is drawn on its own, so one that fails cannot blank the
// tab) and Debug images tab (events.debug_images: the latest iterations of each metric's images;
// HTML debug samples, ClearML's report_media of an .html file, in a sandboxed iframe).

import { call, fileHref } from "./api.js";
import { RUNNING, every, h } from "./util.js";
import { errorPanel, renderFigure } from "./plotkinds.js";

export function renderPlot(title, figure) {
  try {
    return renderFigure(title, figure);
  } catch (err) {
    return [errorPanel(title, "this plot", err)];
  }
}

function parsed(p) {
  try {
    return { p, figure: JSON.parse(p.plot_str || "{}") };
  } catch (err) {
    return { p, error: err };
  }
}

const MERGED_TYPES = new Set(["scatter", "scattergl", "bar"]);

// The SDK draws plots reported with the same title and iteration on one chart (report_scatter2d,
// report_histogram per series): so does this page, when they are all of one x/y type and
// share their x axis title.
function sameChart(items) {
  if (items.length < 2 || items.some((it) => it.error || !Array.isArray(it.figure.data) || !it.figure.data.length)) return false;
  const types = new Set(items.flatMap((it) => it.figure.data.map((tr) => (tr && tr.type) || "scatter")));
  const xTitles = new Set(items.map((it) => JSON.stringify(((it.figure.layout || {}).xaxis || {}).title ?? null)));
  return types.size === 1 && MERGED_TYPES.has([...types][0]) && xTitles.size === 1;
}

function merged(items) {
  const data = items.flatMap((it) => it.figure.data.map((tr) => ({ ...tr, name: tr.name ?? it.p.variant })));
  const first = items[0].p;
  const title = `${first.metric} / ${items.map((it) => it.p.variant).join(", ")} (iter ${first.iter})`;
  return renderPlot(title, { data, layout: items[0].figure.layout || {} });
}

function itemPanels(it) {
  const title = `${it.p.metric} / ${it.p.variant} (iter ${it.p.iter})`;
  if (it.error) return [errorPanel(title, "this plot (its JSON does not parse)", it.error)];
  return renderPlot(title, it.figure);
}

// Plots sorted by metric/variant, drawn per metric and iteration.
function plotPanels(plots) {
  const groups = new Map();
  for (const p of plots) {
    const key = `${p.metric}\u0000${p.iter}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(parsed(p));
  }
  return [...groups.values()].flatMap((items) => (sameChart(items) ? merged(items) : items.flatMap(itemPanels)));
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
    grid.replaceChildren(...(plots.length ? plotPanels(plots) : [h("p", { class: "muted" }, "No plots reported.")]));
  }
  await load();
  const stop = every(5000, async () => { if (RUNNING.has(ctx.task.status)) await load(); });
  return { stop };
}

const HTML_SAMPLE = /\.html?$/i;
const PICTURE = /\.(png|jpe?g|gif|webp|bmp)$/i;
const EXTENSION = /\.[a-z0-9]{1,8}$/i;

// A debug sample the page shows as an <img>: a picture's extension, or none at all.
function isPicture(href) {
  const path = href.split("?")[0];
  return PICTURE.test(path) || !EXTENSION.test(path.split("/").pop());
}

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
  if (!isPicture(href)) {  // report_media of audio, video or any other file: the files server offers it as a download
    const name = decodeURIComponent(href.split("?")[0].split("/").pop());
    return h("a", { class: "sample-file", href: fileHref(e.url, true), download: name }, `⤓ ${name}`);
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
