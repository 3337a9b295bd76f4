// Queues: each queue with its waiting tasks in order, which workers serve it, and per entry
// move up / move down / remove (the task goes back to draft). Refreshed every three seconds.
// The Environment column: a worker that prepares queued tasks' environments ahead of pickup
// reports them (workers.get_all `prepared`, agent/daemon/prepare.py): "env ready on w1".

import { call } from "./api.js";
import { every, fmtAgo, h, statusBadge, toast } from "./util.js";

const REFRESH_MS = 3000;

export async function queuesView(main) {
  const list = h("div", { id: "queues" });
  const nameInput = h("input", { id: "new_queue", placeholder: "New queue name", required: true, spellcheck: "false" });
  main.append(h("div", { class: "toolbar" }, h("h1", {}, "Queues"), h("span", { class: "spacer" }),
    h("form", { class: "inline", onsubmit: async (ev) => {
      ev.preventDefault();
      const name = nameInput.value.trim();
      if (!name) return;
      try {
        await call("queues.create", { name });
        nameInput.value = "";
        toast(`Queue “${name}” created`);
        await load(true);
      } catch (err) { toast(err.message, "error"); }
    } }, nameInput, h("button", { class: "secondary", type: "submit" }, "Create queue"))), list);

  let lastJson = "";

  async function act(endpoint, body, message) {
    try {
      await call(endpoint, body);
      if (message) toast(message);
      await load(true);
    } catch (err) { toast(err.message, "error"); }
  }

  function envLabel(byWorker) {
    for (const wanted of ["ready", "building", "failed"]) {
      const names = Object.keys(byWorker || {}).filter((w) => byWorker[w] === wanted).sort();
      if (names.length) return `env ${wanted} on ${names.join(", ")}`;
    }
    return "";
  }

  function entryRow(queue, entry, index, count, task, env) {
    const name = task ? task.name : entry.task;
    const label = envLabel(env);
    return h("tr", { "data-entry": entry.task },
      h("td", { class: "num" }, index + 1),
      h("td", {}, h("a", { href: `#/task/${entry.task}` }, name)),
      h("td", {}, task ? statusBadge(task.status) : ""),
      h("td", { class: "muted" }, fmtAgo(entry.added)),
      h("td", { class: label.startsWith("env ready") ? "env-ready" : "muted", "data-env": label }, label),
      h("td", { class: "row-actions" },
        h("button", { class: "secondary", title: "Move up", "data-action": "up", disabled: index === 0,
          onclick: () => act("queues.move_task_forward", { queue: queue.id, task: entry.task, count: 1 }) }, "↑"),
        h("button", { class: "secondary", title: "Move down", "data-action": "down", disabled: index === count - 1,
          onclick: () => act("queues.move_task_backward", { queue: queue.id, task: entry.task, count: 1 }) }, "↓"),
        h("button", { class: "secondary", title: "Remove from the queue (back to draft)", "data-action": "remove",
          onclick: () => act("queues.remove_task", { queue: queue.id, task: entry.task, update_task_status: true },
            `Removed “${name}” from ${queue.name}`) }, "Remove")));
  }

  async function load(force = false) {
    const [q, w] = await Promise.all([call("queues.get_all", {}), call("workers.get_all", {})]);
    const queues = q.queues || [];
    const workers = w.workers || [];
    const ids = [...new Set(queues.flatMap((x) => (x.entries || []).map((e) => e.task)))];
    const tasks = ids.length ? (await call("tasks.get_all", { id: ids, only_fields: ["id", "name", "status"] })).tasks || [] : [];
    const json = JSON.stringify([queues, tasks, workers.map((x) => [x.id, x.queues, x.prepared])]);
    if (!force && json === lastJson) return;
    lastJson = json;
    const byId = new Map(tasks.map((t) => [t.id, t]));
    const envs = new Map();
    for (const wk of workers) {
      for (const [task, state] of Object.entries(wk.prepared || {})) {
        envs.set(task, { ...(envs.get(task) || {}), [wk.id]: state });
      }
    }
    list.replaceChildren(...(queues.length ? queues.map((queue) => {
      const entries = queue.entries || [];
      const serving = workers.filter((wk) => (wk.queues || []).some((r) => r.id === queue.id)).map((wk) => wk.id);
      return h("section", { class: "card wide queue", "data-queue": queue.name },
        h("h2", {}, queue.name, " ", (queue.system_tags || []).includes("default") ? h("span", { class: "tag" }, "default") : null,
          h("span", { class: "muted small" }, ` ${entries.length} waiting · `,
            serving.length ? `served by ${serving.join(", ")}` : "no worker listening")),
        entries.length ? h("table", { class: "grid compact" },
          h("thead", {}, h("tr", {}, ["#", "Task", "Status", "Added", "Environment", ""].map((c) => h("th", {}, c)))),
          h("tbody", {}, entries.map((e, i) => entryRow(queue, e, i, entries.length, byId.get(e.task), envs.get(e.task)))))
          : h("p", { class: "muted" }, "Empty."));
    }) : [h("p", { class: "muted" }, "No queues.")]));
  }

  await load(true);
  return every(REFRESH_MS, () => load());
}
