// Workers: each live worker with its queues, the task it runs now and its latest machine
// statistics (from workers.status_report), with a CPU sparkline kept while the page is open.

import { call } from "./api.js";
import { every, fmtAgo, fmtNumber, h, s } from "./util.js";

const REFRESH_MS = 3000;
const HISTORY = 60;

function sparkline(values) {
  const W = 120, H = 28;
  const pts = values.map((v, i) => `${((i / Math.max(1, HISTORY - 1)) * W).toFixed(1)},${(H - (Math.min(100, v) / 100) * H).toFixed(1)}`);
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", "aria-hidden": "true" },
    s("polyline", { points: pts.join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 1.5 }));
}

function gpuText(stats) {
  const util = stats.gpu_utilization || stats.gpu_usage;
  const mem = stats.gpu_memory_used;
  if (!util && !mem) return null;
  const list = (v) => (Array.isArray(v) ? v.map(fmtNumber).join(" / ") : fmtNumber(v));
  return `${util ? `${list(util)}%` : ""}${mem ? ` · ${list(mem)} MiB` : ""}`;
}

// GPU leases for people and GPUs the daemon stepped aside from: the worker's system_tags
// (agent/gpus/sharing.py status_tags), shown under its GPU readings.
function gpuNotes(tags) {
  const notes = [];
  for (const tag of tags || []) {
    const parts = String(tag).split(":");
    if (parts[0] === "gpu-leased" && parts.length === 4) {
      const until = new Date(Number(parts[3]) * 1000);
      notes.push(`GPU ${parts[1]} leased by ${parts[2]} until ${until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`);
    } else if (parts[0] === "gpu-foreign" && parts.length === 2) {
      notes.push(`GPU ${parts[1]} in use outside Shipyard`);
    }
  }
  return notes.map((n) => h("div", { class: "muted small gpu-note" }, n));
}

export async function workersView(main) {
  const table = h("tbody", { id: "worker_rows" });
  const history = new Map();
  main.append(h("div", { class: "toolbar" }, h("h1", {}, "Workers"), h("span", { class: "muted" }, "live, every 3 s")),
    h("table", { class: "grid", id: "workers" }, h("thead", {}, h("tr", {},
      ["Worker", "Queues", "Current task", "CPU", "Memory", "Disk free", "Network", "GPU", "Last report"].map((c) => h("th", {}, c)))), table));

  async function load() {
    const data = await call("workers.get_all", {});
    const workers = data.workers || [];
    const taskIds = workers.map((w) => (w.task || {}).id).filter(Boolean);
    const tasks = taskIds.length ? (await call("tasks.get_all", { id: taskIds, only_fields: ["id", "name", "status", "started"] })).tasks || [] : [];
    const byId = new Map(tasks.map((t) => [t.id, t]));
    table.replaceChildren(...(workers.length ? workers.map((w) => {
      const st = w.machine_stats || {};
      const cpu = Array.isArray(st.cpu_usage) ? st.cpu_usage.reduce((a, b) => a + b, 0) / (st.cpu_usage.length || 1) : Number(st.cpu_usage);
      const series = history.get(w.id) || [];
      if (Number.isFinite(cpu)) series.push(cpu);
      while (series.length > HISTORY) series.shift();
      history.set(w.id, series);
      const task = w.task && w.task.id ? byId.get(w.task.id) || w.task : null;
      const used = Number(st.memory_used), free = Number(st.memory_free);
      return h("tr", { "data-worker": w.id },
        h("td", {}, h("strong", {}, w.id), w.ip ? h("div", { class: "muted small" }, w.ip) : null),
        h("td", {}, (w.queues || []).map((q) => h("span", { class: "tag" }, q.name || q.id))),
        h("td", {}, task ? [h("a", { href: `#/task/${task.id}` }, task.name || task.id),
          task.started ? h("div", { class: "muted small" }, `started ${fmtAgo(task.started)}`) : null] : h("span", { class: "muted" }, "idle")),
        h("td", {}, Number.isFinite(cpu) ? `${fmtNumber(Math.round(cpu * 10) / 10)}%` : "—", series.length > 1 ? sparkline(series) : null),
        h("td", {}, Number.isFinite(used) ? `${fmtNumber(Math.round(used))} MiB used` : "—",
          Number.isFinite(free) ? h("div", { class: "muted small" }, `${fmtNumber(Math.round(free))} MiB free`) : null),
        h("td", {}, st.disk_free_home !== undefined ? `${fmtNumber(st.disk_free_home)}%` : "—"),
        h("td", { class: "small" }, st.network_rx !== undefined ? `↓ ${fmtNumber(st.network_rx)} ↑ ${fmtNumber(st.network_tx)} MiB/s` : "—"),
        h("td", {}, gpuText(st) || "—", ...gpuNotes(w.system_tags)),
        h("td", { class: "muted" }, fmtAgo(w.last_report_time || w.last_activity_time)));
    }) : [h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No worker has reported recently. Start one with “shipyard daemon --queue default”."))]));
  }

  await load();
  return every(REFRESH_MS, load);
}
