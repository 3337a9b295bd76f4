// Bulk actions on the experiments list's selected rows: abort, archive / unarchive, enqueue to
// a chosen queue, delete. Each asks first, sends one tasks.*_many call, and shows what happened
// to every row (the server answers succeeded / failed lists, one entry per id).

import { call } from "./api.js";
import { dialog, h } from "./util.js";

export const ACTIONS = {
  abort: { label: "Abort", endpoint: "tasks.stop_many", done: "aborted",
    text: "A running task is stopped by its agent; a queued one leaves its queue." },
  archive: { label: "Archive", endpoint: "tasks.archive_many", done: "archived", text: "Archived experiments are hidden from the list." },
  unarchive: { label: "Unarchive", endpoint: "tasks.unarchive_many", done: "unarchived", text: "" },
  enqueue: { label: "Enqueue", endpoint: "tasks.enqueue_many", done: "enqueued", text: "Drafts, stopped and failed experiments can be enqueued." },
  delete: { label: "Delete", endpoint: "tasks.delete_many", done: "deleted",
    text: "Their console, scalars, plots and artifacts are deleted too. This cannot be undone." },
};

function queuePicker(queues) {
  return h("label", {}, "Queue", h("select", { id: "bulk_queue" }, queues.map((q) =>
    h("option", { value: q.id, selected: (q.system_tags || []).includes("default") }, q.name))));
}

// Ask, then run `action` on `tasks` ([{id, name}]); resolves the server's answer with the
// request's extra fields, or null when cancelled.
export async function runBulk(action, tasks, queues) {
  const spec = ACTIONS[action];
  const picker = action === "enqueue" ? queuePicker(queues) : null;
  const names = tasks.slice(0, 8).map((t) => h("li", {}, t.name || t.id));
  const more = tasks.length > 8 ? h("li", { class: "muted" }, `and ${tasks.length - 8} more`) : null;
  const body = h("div", {}, h("p", {}, spec.text), h("ul", { class: "bulk-names" }, names, more), picker);
  const title = `${spec.label} ${tasks.length} experiment${tasks.length === 1 ? "" : "s"}`;
  if (!(await dialog(title, body, spec.label))) return null;
  const request = { ids: tasks.map((t) => t.id) };
  if (picker) request.queue = picker.querySelector("select").value;
  return call(spec.endpoint, request);
}

// The per-row outcome: "N of M <done>", then a line per experiment (ok, or the server's reason).
export function resultPanel(action, result, names, onClose) {
  const spec = ACTIONS[action];
  const ok = result.succeeded || [], bad = result.failed || [];
  const name = (id) => names.get(id) || id;
  const line = (id, good, msg) => h("li", { "data-task": id, "data-ok": good ? "1" : "0", class: good ? "ok" : "bad" },
    h("strong", {}, name(id)), ": ", msg);
  return h("div", { class: `card bulk-result ${bad.length ? "partial" : ""}`, id: "bulk_result", role: "status",
    "data-action": action },
  h("div", { class: "toolbar" }, h("strong", {}, `${spec.label}: ${ok.length} of ${ok.length + bad.length} ${spec.done}`),
    h("span", { class: "spacer" }), h("button", { class: "link", id: "bulk_result_close", onclick: onClose }, "Dismiss")),
  h("ul", {}, ok.map((s) => line(s.id, true, spec.done)),
    bad.map((f) => line(f.id, false, (f.error && f.error.msg) || "failed"))));
}
