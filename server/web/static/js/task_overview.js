// Overview tab: status and timeline, where and how long it ran (worker, queue, runtime
// properties the SDK and the agent record), and the latest value of each metric.

import { call } from "./api.js";
import { RUNNING, fmtDate, fmtDuration, fmtNumber, h, keyValueTable, secondsBetween, statusBadge } from "./util.js";

function timeline(t) {
  const end = t.completed || (RUNNING.has(t.status) ? null : t.status_changed);
  const steps = [
    ["Created", t.created, t.user ? `by ${t.user}` : ""],
    t.status === "queued" ? ["Queued", t.status_changed, "waiting for a worker"] : null,
    ["Started", t.started, t.last_worker ? `on ${t.last_worker}` : ""],
    [t.status === "completed" ? "Completed" : t.status === "failed" ? "Failed" : t.status === "stopped" ? "Stopped"
      : "Finished", end, t.status_reason || ""],
    t.published ? ["Published", t.published, ""] : null,
  ].filter(Boolean);
  return h("ol", { class: "timeline", id: "timeline" }, steps.map(([label, when, note]) =>
    h("li", { class: when ? "done" : "pending" }, h("span", { class: "dot" }),
      h("strong", {}, label), " ", h("span", { class: "muted" }, when ? fmtDate(when) : "—"),
      note ? h("span", { class: "note" }, ` ${note}`) : null)));
}

function runtimeRows(runtime) {
  return Object.entries(runtime || {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
}

// GPU memory: the request the daemon packs by against the peak it measured (agent/gpus/packing.py);
// a request at least twice the use and 1 GiB above it is flagged, as `shipyard task show` does.
export function gpuMemoryText(runtime) {
  const r = runtime || {};
  const request = Number(r.gpu_memory_request_mb), peak = Number(r.gpu_memory_peak_mb);
  if (!(request > 0) && !(peak > 0)) return null;
  let text = `${request > 0 ? `request ${request} MB` : "no request (whole GPUs)"} · ${peak > 0 ? `measured peak ${peak} MB` : "not measured yet"}`;
  if (request > 0 && peak > 0 && request >= 2 * peak && request - peak >= 1024) text += ` · request far above use (${(request / peak).toFixed(1)}×)`;
  if (r.gpu_request_exceeded_mb) text += ` · outgrew its request once (${r.gpu_request_exceeded_mb} MB), runs alone`;
  return text;
}

function metricsTable(lastMetrics) {
  const rows = [];
  for (const variants of Object.values(lastMetrics || {})) {
    for (const m of Object.values(variants || {})) {
      if (m && m.metric !== undefined) rows.push(m);
    }
  }
  if (!rows.length) return h("p", { class: "muted" }, "No scalars reported.");
  rows.sort((a, b) => `${a.metric}/${a.variant}`.localeCompare(`${b.metric}/${b.variant}`));
  return h("table", { class: "grid compact", id: "last_metrics" },
    h("thead", {}, h("tr", {}, ["Metric", "Variant", "Last", "Min", "Max"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((m) => h("tr", {}, h("td", {}, m.metric), h("td", {}, m.variant),
      h("td", { class: "num" }, fmtNumber(m.value)), h("td", { class: "num" }, fmtNumber(m.min_value)),
      h("td", { class: "num" }, fmtNumber(m.max_value))))));
}

export async function overviewTab(body, ctx) {
  let queueNames = new Map(ctx.queues.map((q) => [q.id, q.name]));
  let worker = null;

  async function loadWorker(t) {
    worker = null;
    if (!t.last_worker || !RUNNING.has(t.status)) return;
    const data = await call("workers.get_all", {});
    worker = (data.workers || []).find((w) => w.id === t.last_worker) || null;
  }

  function render(t) {
    const started = t.started;
    const ran = started ? secondsBetween(started, t.completed || (RUNNING.has(t.status) ? new Date().toISOString() : t.status_changed)) : null;
    const queue = (t.execution || {}).queue;
    const stats = worker && worker.machine_stats ? worker.machine_stats : null;
    body.replaceChildren(h("div", { class: "cards" },
      h("div", { class: "card" }, h("h3", {}, "Status"),
        h("p", {}, statusBadge(t.status), " ", h("span", { class: "muted" }, `since ${fmtDate(t.status_changed)}`)),
        timeline(t)),
      h("div", { class: "card" }, h("h3", {}, "Execution"), keyValueTable([
        ["Worker", t.last_worker || "—"],
        ["Last report", fmtDate(t.last_worker_report)],
        ["Queue", queue ? queueNames.get(queue) || queue : "—"],
        ["Run time", fmtDuration(ran)],
        ["Last iteration", t.last_iteration ?? "—"],
        ["Container", (t.container || {}).image ? `${t.container.image} ${t.container.arguments || ""}` : "—"],
        ["Output destination", (t.output || {}).destination || "—"],
        gpuMemoryText(t.runtime) ? ["GPU memory", h("span", { id: "gpu_memory" }, gpuMemoryText(t.runtime))] : null,
        stats ? ["Worker now", `CPU ${fmtNumber((stats.cpu_usage || [])[0])}% · mem ${fmtNumber(stats.memory_used)} MiB used`] : null,
      ])),
      h("div", { class: "card wide" }, h("h3", {}, "Latest metrics"), metricsTable(t.last_metrics)),
      h("div", { class: "card wide" }, h("h3", {}, "Runtime"),
        runtimeRows(t.runtime).length ? keyValueTable(runtimeRows(t.runtime)) : h("p", { class: "muted" }, "Nothing recorded.")),
      t.comment ? h("div", { class: "card wide" }, h("h3", {}, "Description"), h("pre", { class: "comment" }, t.comment)) : null));
  }

  await loadWorker(ctx.task).catch(() => null);
  render(ctx.task);
  return {
    async update(t) {
      await loadWorker(t).catch(() => null);
      render(t);
    },
  };
}
