// One experiment: header with status and actions, and tabs for its parts. The task document is
// re-read every two seconds; when it changed, the header and the open tab are brought up to date.
//
// Actions: clone (asks for a name, opens the clone's editor), edit (drafts only), enqueue to a
// chosen queue, abort, reset, archive / unarchive.

import { call } from "./api.js";
import { RUNNING, askText, confirmAction, copyable, every, fill, h, statusBadge, toast } from "./util.js";
import { overviewTab } from "./task_overview.js";
import { scriptTab, requirementsTab } from "./task_script.js";
import { configurationTab } from "./task_params.js";
import { artifactsTab } from "./task_artifacts.js";
import { consoleTab } from "./console.js";
import { scalarsTab } from "./scalars.js";
import { plotsTab, imagesTab } from "./plots.js";
import { editTab } from "./taskedit.js";

const TABS = [
  ["overview", "Overview", overviewTab], ["script", "Script", scriptTab],
  ["configuration", "Configuration", configurationTab], ["console", "Console", consoleTab],
  ["scalars", "Scalars", scalarsTab], ["plots", "Plots", plotsTab], ["images", "Debug images", imagesTab],
  ["artifacts", "Artifacts & models", artifactsTab], ["requirements", "Requirements", requirementsTab],
  ["edit", "Edit", editTab],
];
const REFRESH_MS = 2000;

export async function taskView(main, taskId, initialTab) {
  const ctx = { task: null, projectName: "", queues: [], reload: null, openTab: null };
  let tab = TABS.some(([key]) => key === initialTab) ? initialTab : "overview";
  let tabHandle = null;
  let stamp = "";

  const header = h("div", { class: "task-header", id: "task_header" });
  const actions = h("div", { class: "actions", id: "task_actions" });
  const tabBar = h("nav", { class: "tabs", id: "task_tabs" });
  const body = h("section", { class: "tab-body", id: "tab_body" });
  main.append(header, actions, tabBar, body);

  async function fetchTask() {
    const data = await call("tasks.get_by_id", { task: taskId });
    return data.task;
  }

  async function lookups() {
    const [queues, project] = await Promise.all([
      call("queues.get_all", { only_fields: ["id", "name", "system_tags"] }),
      ctx.task.project ? call("projects.get_by_id", { project: ctx.task.project }).catch(() => null) : null,
    ]);
    ctx.queues = queues.queues || [];
    ctx.projectName = project && project.project ? project.project.name : "";
  }

  function renderHeader() {
    const t = ctx.task;
    const archived = (t.system_tags || []).includes("archived");
    header.replaceChildren(
      h("div", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Experiments"), " / ",
        t.project ? h("a", { href: `#/tasks?project=${encodeURIComponent(t.project)}` }, ctx.projectName || t.project) : "(no project)"),
      h("h1", { id: "task_name" }, t.name || t.id, " ", statusBadge(t.status), archived ? h("span", { class: "tag" }, "archived") : null),
      h("div", { class: "muted" }, "id ", copyable(t.id), " · ", t.type || "",
        t.status_reason || t.status_message ? ` · ${[t.status_reason, t.status_message].filter(Boolean).join(" — ")}` : "",
        t.parent ? [" · cloned from ", h("a", { href: `#/task/${t.parent}` }, t.parent.slice(0, 8))] : null));
  }

  function renderActions() {
    const t = ctx.task;
    const st = t.status;
    const archived = (t.system_tags || []).includes("archived");
    const queueSelect = h("select", { id: "queue_select", "aria-label": "Queue" },
      ctx.queues.map((q) => h("option", { value: q.id, selected: (t.execution || {}).queue ? (t.execution || {}).queue === q.id
        : (q.system_tags || []).includes("default") }, q.name)));
    const act = (label, id, fn, opts = {}) => h("button", { id, class: opts.cls || "secondary", disabled: opts.disabled,
      title: opts.title || null, onclick: async (ev) => {
        ev.target.disabled = true;
        try { await fn(); } catch (err) { toast(err.message, "error"); } finally { ev.target.disabled = false; }
      } }, label);
    fill(actions, 
      act("Clone", "action_clone", clone, { cls: "primary" }),
      st === "created" ? act("Edit", "action_edit", async () => openTab("edit")) : null,
      h("span", { class: "group" }, queueSelect,
        act("Enqueue", "action_enqueue", () => enqueue(queueSelect.value),
          { disabled: !["created", "stopped", "failed"].includes(st) || !ctx.queues.length,
            title: st === "completed" ? "Reset the task first, or clone it" : null })),
      act("Abort", "action_abort", abort, { disabled: !RUNNING.has(st) }),
      act("Reset", "action_reset", reset, { disabled: RUNNING.has(st) || st === "created" }),
      archived ? act("Unarchive", "action_unarchive", () => setArchived(false))
        : act("Archive", "action_archive", () => setArchived(true)));
  }

  function renderTabs() {
    tabBar.replaceChildren(...TABS.filter(([key]) => key !== "edit" || ctx.task.status === "created")
      .map(([key, label]) => h("a", { href: `#/task/${taskId}/${key}`, class: key === tab ? "active" : "",
        "data-tab": key, onclick: (ev) => { ev.preventDefault(); openTab(key); } }, label)));
  }

  async function openTab(key) {
    if (tabHandle && tabHandle.stop) tabHandle.stop();
    tabHandle = null;
    tab = key === "edit" && ctx.task.status !== "created" ? "configuration" : key;
    history.replaceState(null, "", `#/task/${taskId}/${tab}`);
    renderTabs();
    body.replaceChildren();
    const [, , render] = TABS.find(([k]) => k === tab);
    try {
      tabHandle = (await render(body, ctx)) || null;
    } catch (err) {
      body.replaceChildren(h("div", { class: "error-box" }, err.message));
    }
  }
  ctx.openTab = openTab;

  async function refresh(force = false) {
    const task = await fetchTask();
    const next = `${task.status}|${task.last_update}|${task.status_message}|${(task.system_tags || []).join()}`;
    if (!force && next === stamp) return;
    const statusChanged = ctx.task && ctx.task.status !== task.status;
    stamp = next;
    ctx.task = task;
    renderHeader();
    renderActions();
    if (statusChanged) {
      renderTabs();
      if (tab === "edit" && task.status !== "created") await openTab("configuration");
    }
    if (tabHandle && tabHandle.update) await tabHandle.update(task);
  }
  ctx.reload = () => refresh(true);

  async function clone() {
    const name = await askText("Clone experiment", "Name of the new experiment", `${ctx.task.name} (clone)`, "Clone");
    if (!name) return;
    const data = await call("tasks.clone", { task: taskId, new_task_name: name });
    toast(`Cloned as “${name}”`);
    window.location.hash = `#/task/${data.id}/edit`;
  }

  async function enqueue(queue) {
    if (tabHandle && tabHandle.dirty && tabHandle.dirty()) await tabHandle.save(); // enqueue what is shown
    await call("tasks.enqueue", { task: taskId, queue });
    const name = (ctx.queues.find((q) => q.id === queue) || {}).name || queue;
    toast(`Enqueued to ${name}`);
    await refresh(true);
  }

  async function abort() {
    if (!(await confirmAction("Abort experiment", `Abort “${ctx.task.name}”? A running task is stopped by its agent.`, "Abort"))) return;
    await call("tasks.stop", { task: taskId });
    toast("Abort requested");
    await refresh(true);
  }

  async function reset() {
    if (!(await confirmAction("Reset experiment", `Reset “${ctx.task.name}” to a draft? Its console, scalars, plots and output artifacts are deleted.`, "Reset"))) return;
    await call("tasks.reset", { task: taskId, force: ctx.task.status === "published" });
    toast("Reset to draft");
    await refresh(true);
  }

  async function setArchived(on) {
    if (on) await call("tasks.archive", { tasks: [taskId] });
    else await call("tasks.unarchive_many", { ids: [taskId] });
    toast(on ? "Archived" : "Unarchived");
    await refresh(true);
  }

  ctx.task = await fetchTask();
  stamp = `${ctx.task.status}|${ctx.task.last_update}|${ctx.task.status_message}|${(ctx.task.system_tags || []).join()}`;
  await lookups();
  renderHeader();
  renderActions();
  await openTab(tab);
  const stop = every(REFRESH_MS, () => refresh());
  return () => { stop(); if (tabHandle && tabHandle.stop) tabHandle.stop(); };
}
