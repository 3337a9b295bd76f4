// Scalars tab: one chart per metric with a line per variant, over iterations
// (events.scalar_metrics_iter_histogram), plus single values (report_single_value). While the
// task runs the charts are redrawn every five seconds when the data changed.

import { call } from "./api.js";
import { RUNNING, every, fmtNumber, h } from "./util.js";
import { lineChart } from "./charts.js";

const REFRESH_MS = 5000;
const SAMPLES = 2000;

function metricOrder(a, b) {
  const monitor = (m) => (m.startsWith(":monitor:") ? 1 : 0);
  return monitor(a) - monitor(b) || a.localeCompare(b);
}

export async function scalarsTab(body, ctx) {
  const taskId = ctx.task.id;
  const filter = h("input", { type: "search", id: "scalar_filter", placeholder: "Filter metrics…", oninput: () => paint() });
  const grid = h("div", { class: "charts", id: "scalar_charts" });
  const singles = h("div", { id: "single_values" });
  body.append(h("div", { class: "toolbar" }, filter), singles, grid);
  let data = {}, values = [], lastJson = "";

  async function load() {
    const [hist, single] = await Promise.all([
      call("events.scalar_metrics_iter_histogram", { task: taskId, key: "iter", samples: SAMPLES }),
      call("events.get_task_single_value_metrics", { tasks: [taskId] }),
    ]);
    const json = JSON.stringify([hist, single]);
    if (json === lastJson) return false;
    lastJson = json;
    data = hist || {};
    values = ((single.tasks || [])[0] || {}).values || [];
    return true;
  }

  function paint() {
    const term = filter.value.trim().toLowerCase();
    const metrics = Object.keys(data).sort(metricOrder).filter((m) => !term || m.toLowerCase().includes(term));
    grid.replaceChildren(...(metrics.length ? metrics.map((metric) => {
      const variants = Object.entries(data[metric]).sort(([a], [b]) => a.localeCompare(b))
        .map(([variant, d]) => ({ name: variant, x: d.x || [], y: d.y || [] }));
      return lineChart(metric, variants, { xLabel: "iteration" });
    }) : [h("p", { class: "muted" }, Object.keys(data).length ? "No metric matches the filter." : "No scalars reported.")]));
    singles.replaceChildren(values.length ? h("div", { class: "card wide" }, h("h3", {}, "Single values"),
      h("table", { class: "grid compact" }, h("tbody", {}, values.map((v) =>
        h("tr", {}, h("th", {}, v.variant), h("td", { class: "num" }, fmtNumber(v.value))))))) : "");
  }

  await load();
  paint();
  let running = RUNNING.has(ctx.task.status);
  const stop = every(REFRESH_MS, async () => { if (running && await load()) paint(); });
  return {
    stop,
    async update(t) {
      const was = running;
      running = RUNNING.has(t.status);
      if (was && !running && await load()) paint(); // the final points
    },
  };
}
