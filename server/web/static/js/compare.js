// Compare view: 2 to 10 experiments side by side, reached from the experiments list's
// selection or by link:
//   #/compare?ids=a,b,c[&tab=scalars|params][&smooth=0.6][&log=1][&x=iter|wall|relative][&diff=1]
// Scalars: one chart per metric/variant with a line per task (events.multi_task_scalar_metrics_
// iter_histogram), each task in the same colour everywhere; smoothing, log scale and the x axis
// are redrawn from the fetched points. Hyperparameters: a row per section/name, a column per
// task, rows whose values differ marked (and optionally the only ones shown).

import { call } from "./api.js";
import { lineChart } from "./charts.js";
import { X_LABELS, X_MODES, histogramKey, smooth, xFormatter, xValues } from "./series.js";
import { RUNNING, errorBox, every, fill, h, statusBadge } from "./util.js";

export const MIN_TASKS = 2;
export const MAX_TASKS = 10;
const SAMPLES = 2000;
const REFRESH_MS = 10000;
const FIELDS = ["id", "name", "status", "project", "hyperparams", "last_iteration", "started"];

export function compareHash(ids) {
  return `#/compare?ids=${ids.map(encodeURIComponent).join(",")}`;
}

function readState(params) {
  const smoothing = Number(params.get("smooth"));
  return {
    ids: [...new Set((params.get("ids") || "").split(",").map((x) => x.trim()).filter(Boolean))],
    tab: params.get("tab") === "params" ? "params" : "scalars",
    smooth: Number.isFinite(smoothing) ? Math.min(Math.max(smoothing, 0), 0.99) : 0,
    log: params.get("log") === "1",
    x: X_MODES.includes(params.get("x")) ? params.get("x") : "iter",
    diff: params.get("diff") === "1",
  };
}

function writeState(st) {
  const p = new URLSearchParams({ ids: st.ids.join(",") });
  if (st.tab !== "scalars") p.set("tab", st.tab);
  if (st.smooth) p.set("smooth", String(st.smooth));
  if (st.log) p.set("log", "1");
  if (st.x !== "iter") p.set("x", st.x);
  if (st.diff) p.set("diff", "1");
  history.replaceState(null, "", `#/compare?${p.toString().replace(/%2C/g, ",")}`);
}

function metricOrder(a, b) {
  const monitor = (m) => (m.startsWith(":monitor:") ? 1 : 0);
  return monitor(a) - monitor(b) || a.localeCompare(b);
}

function taskChip(t, color) {
  return h("span", { class: "compare-task", "data-task": t.id },
    h("span", { class: "swatch", "data-color": color }),
    h("a", { href: `#/task/${t.id}` }, t.name || t.id), " ", statusBadge(t.status));
}

export async function compareView(main, params) {
  const st = readState(params);
  if (st.ids.length < MIN_TASKS || st.ids.length > MAX_TASKS) {
    main.append(h("p", {}, h("a", { href: "#/tasks" }, "Experiments")),
      errorBox(`Compare needs ${MIN_TASKS} to ${MAX_TASKS} experiments; this link names ${st.ids.length}. ` +
        "Select them in the experiments list, then press Compare."));
    return null;
  }
  const data = await call("tasks.get_all", { id: st.ids, only_fields: FIELDS, search_hidden: true });
  const byId = new Map((data.tasks || []).map((t) => [t.id, t]));
  const tasks = st.ids.filter((id) => byId.has(id)).map((id) => byId.get(id));
  const color = new Map(st.ids.map((id, i) => [id, i]));
  const missing = st.ids.filter((id) => !byId.has(id));

  const body = h("section", { id: "compare_body" });
  const tabBar = h("nav", { class: "tabs", id: "compare_tabs" });
  main.append(h("div", { class: "task-header" },
    h("div", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Experiments"), " / compare"),
    h("h1", {}, `Compare ${tasks.length} experiments`),
    h("div", { class: "compare-legend", id: "compare_legend" }, tasks.map((t) => taskChip(t, color.get(t.id)))),
    missing.length ? h("p", { class: "muted", id: "compare_missing" }, `Not found: ${missing.join(", ")}`) : null),
    tabBar, body);

  let handle = null;
  function openTab(tab) {
    if (handle && handle.stop) handle.stop();
    st.tab = tab;
    writeState(st);
    fill(tabBar, ...[["scalars", "Scalars"], ["params", "Hyperparameters"]].map(([key, label]) =>
      h("a", { href: "#", "data-tab": key, class: key === tab ? "active" : "",
        onclick: (ev) => { ev.preventDefault(); openTab(key); } }, label)));
    body.replaceChildren();
    handle = tab === "params" ? paramsTab(body, tasks, color, st) : scalarsTab(body, tasks, color, st);
  }
  openTab(st.tab);
  return () => { if (handle && handle.stop) handle.stop(); };
}

// -- scalars -----------------------------------------------------------------------------------

function scalarsTab(body, tasks, color, st) {
  const cache = new Map(); // histogram key -> {metric: {variant: {task: {x, y}}}}
  const label = h("output", { id: "compare_smoothing_value" }, st.smooth.toFixed(2));
  const slider = h("input", { type: "range", id: "compare_smoothing", min: "0", max: "0.99", step: "0.01",
    value: String(st.smooth), "aria-label": "Smoothing",
    oninput: () => { st.smooth = Number(slider.value); label.textContent = st.smooth.toFixed(2); schedule(); } });
  const log = h("input", { type: "checkbox", id: "compare_log", checked: st.log,
    onchange: () => { st.log = log.checked; schedule(); } });
  const xSelect = h("select", { id: "compare_x", "aria-label": "X axis",
    onchange: () => { st.x = xSelect.value; show().catch(report); } },
  X_MODES.map((m) => h("option", { value: m, selected: m === st.x }, X_LABELS[m])));
  const filter = h("input", { type: "search", id: "compare_filter", placeholder: "Filter metrics…", oninput: () => schedule() });
  const grid = h("div", { class: "charts", id: "compare_charts" });
  body.append(h("div", { class: "toolbar" }, filter,
    h("label", { class: "chip" }, "Smoothing ", slider, label),
    h("label", { class: "chip" }, log, "Log scale"),
    h("label", { class: "chip" }, "X axis ", xSelect)), grid);

  const report = (err) => grid.replaceChildren(errorBox(err));
  let frame = 0;
  function schedule() {
    writeState(st);
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(paint);
  }

  async function fetchKey(key) {
    if (!cache.has(key)) {
      const data = await call("events.multi_task_scalar_metrics_iter_histogram",
        { tasks: tasks.map((t) => t.id), key, samples: SAMPLES });
      cache.set(key, data.metrics || {});
    }
    return cache.get(key);
  }

  function chart(metric, variant, perTask) {
    const series = tasks.filter((t) => perTask[t.id]).map((t) => ({
      name: t.name || t.id, color: color.get(t.id),
      x: xValues(perTask[t.id].x || [], st.x), y: smooth(perTask[t.id].y || [], st.smooth),
    }));
    return lineChart(`${metric} / ${variant}`, series, { xLabel: X_LABELS[st.x], logY: st.log, xFormat: xFormatter(st.x) });
  }

  function paint() {
    const metrics = cache.get(histogramKey(st.x)) || {};
    const term = filter.value.trim().toLowerCase();
    const figures = Object.keys(metrics).sort(metricOrder).flatMap((metric) =>
      Object.keys(metrics[metric]).sort((a, b) => a.localeCompare(b))
        .filter((variant) => !term || `${metric} / ${variant}`.toLowerCase().includes(term))
        .map((variant) => chart(metric, variant, metrics[metric][variant])));
    grid.replaceChildren(...(figures.length ? figures : [h("p", { class: "muted" },
      Object.keys(metrics).length ? "No metric matches the filter." : "None of these experiments reported scalars.")]));
  }

  async function show() {
    writeState(st);
    await fetchKey(histogramKey(st.x));
    paint();
  }

  show().catch(report);
  const stop = every(REFRESH_MS, async () => {
    if (!tasks.some((t) => RUNNING.has(t.status))) return;
    cache.clear();
    await show();
  });
  return { stop };
}

// -- hyperparameters ---------------------------------------------------------------------------

export function paramRows(tasks) {
  const keys = new Map();
  for (const t of tasks) {
    for (const [section, params] of Object.entries(t.hyperparams || {})) {
      for (const name of Object.keys(params || {})) keys.set(`${section}/${name}`, [section, name]);
    }
  }
  return [...keys.values()].sort((a, b) => a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]))
    .map(([section, name]) => {
      const values = tasks.map((t) => {
        const p = ((t.hyperparams || {})[section] || {})[name];
        return p && p.value !== undefined && p.value !== null ? String(p.value) : null;
      });
      return { section, name, values, differs: new Set(values).size > 1 };
    });
}

function paramsTab(body, tasks, color, st) {
  const rows = paramRows(tasks);
  const differing = rows.filter((r) => r.differs).length;
  const only = h("input", { type: "checkbox", id: "compare_only_diff", checked: st.diff,
    onchange: () => { st.diff = only.checked; writeState(st); apply(); } });
  const table = h("table", { class: "grid compact params compare-params", id: "compare_params" },
    h("thead", {}, h("tr", {}, h("th", {}, "Section"), h("th", {}, "Name"),
      tasks.map((t) => h("th", { "data-task": t.id }, h("span", { class: "swatch", "data-color": color.get(t.id) }), " ",
        t.name || t.id)))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-param": `${r.section}/${r.name}`, class: r.differs ? "differs" : null,
      "data-differs": r.differs ? "1" : "0" },
    h("td", { class: "muted" }, r.section), h("td", {}, r.name),
    r.values.map((v) => h("td", { class: v === null ? "value muted" : "value" }, v === null ? "—" : v))))));
  body.append(h("div", { class: "toolbar" }, h("label", { class: "chip" }, only, "Show only differences"),
    h("span", { class: "muted", id: "compare_diff_count" }, `${differing} of ${rows.length} parameters differ`)),
  rows.length ? table : h("p", { class: "muted" }, "None of these experiments has hyperparameters."));

  function apply() {
    for (const tr of table.querySelectorAll("tbody tr")) tr.hidden = st.diff && tr.dataset.differs !== "1";
  }
  apply();
  return null;
}
