// Experiments list: projects on the left; filters (name, status, tags, archived), sortable
// columns and live statuses (re-queried every few seconds) on the right. The filters live in
// the URL hash, so a reload or a shared link shows the same list.

import { call } from "./api.js";
import { STATUSES, escapeRegex, every, fmtAgo, fmtDate, h, statusBadge, toast } from "./util.js";

const FIELDS = ["id", "name", "status", "status_message", "project", "type", "tags", "system_tags", "user",
  "created", "started", "completed", "last_update", "last_iteration", "last_worker", "execution.queue"];
const COLUMNS = [
  ["status", "Status"], ["name", "Name"], [null, "Project"], ["type", "Type"], [null, "Tags"],
  ["started", "Started"], ["last_update", "Updated"], ["last_iteration", "Iter"], [null, "Worker / queue"],
];
const PAGE = 50;
const REFRESH_MS = 3000;

function readFilters(params) {
  return {
    name: params.get("name") || "",
    status: (params.get("status") || "").split(",").filter(Boolean),
    project: params.get("project") || "",
    tags: params.get("tags") || "",
    archived: params.get("archived") === "1",
    order: params.get("order") || "-last_update",
    size: Math.max(PAGE, Number(params.get("size")) || PAGE),
  };
}

function writeFilters(f) {
  const p = new URLSearchParams();
  if (f.name) p.set("name", f.name);
  if (f.status.length) p.set("status", f.status.join(","));
  if (f.project) p.set("project", f.project);
  if (f.tags) p.set("tags", f.tags);
  if (f.archived) p.set("archived", "1");
  if (f.order !== "-last_update") p.set("order", f.order);
  if (f.size !== PAGE) p.set("size", String(f.size));
  const qs = p.toString();
  history.replaceState(null, "", `#/tasks${qs ? `?${qs}` : ""}`);
}

function query(f) {
  const body = {
    only_fields: FIELDS, order_by: [f.order, "-created"], page: 0, page_size: f.size + 1,
    system_tags: [f.archived ? "archived" : "-archived"],
  };
  if (f.name) body.name = escapeRegex(f.name);
  if (f.status.length) body.status = f.status;
  if (f.project) body.project = [f.project];
  const tags = f.tags.split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) body.tags = tags;
  return body;
}

export async function tasksView(main, params) {
  const f = readFilters(params);
  let projects = new Map();
  let queues = new Map();
  let lastJson = "";

  const projectList = h("ul", { class: "projects", id: "projects" });
  const tbody = h("tbody", { id: "task_rows" });
  const headRow = h("tr", {});
  const more = h("button", { class: "secondary", id: "more", hidden: true, onclick: () => {
    f.size += PAGE; changed();
  } }, "Show more");
  const count = h("span", { class: "muted", id: "task_count" });

  const nameInput = h("input", { type: "search", placeholder: "Name contains…", value: f.name, id: "filter_name",
    oninput: debounce(() => { f.name = nameInput.value.trim(); changed(); }, 250) });
  const tagsInput = h("input", { type: "search", placeholder: "Tags (a, b, -c)", value: f.tags, id: "filter_tags",
    oninput: debounce(() => { f.tags = tagsInput.value; changed(); }, 300) });
  const statusBoxes = STATUSES.map((st) => h("label", { class: "chip" },
    h("input", { type: "checkbox", value: st, checked: f.status.includes(st), "data-status-filter": st,
      onchange: () => {
        f.status = STATUSES.filter((x) => main.querySelector(`[data-status-filter="${x}"]`).checked);
        changed();
      } }), statusBadge(st)));
  const archived = h("label", { class: "chip" }, h("input", { type: "checkbox", checked: f.archived, id: "filter_archived",
    onchange: (ev) => { f.archived = ev.target.checked; changed(); } }), "Archived");

  main.append(h("div", { class: "with-side" },
    h("aside", { class: "side" }, h("h3", {}, "Projects"), projectList),
    h("section", { class: "grow" },
      h("div", { class: "toolbar" }, h("h1", {}, "Experiments"), count),
      h("div", { class: "filters" }, nameInput, tagsInput, h("span", { class: "chips" }, statusBoxes, archived)),
      h("table", { class: "grid tasks", id: "tasks" }, h("thead", {}, headRow), tbody), more)));

  function renderHead() {
    const key = f.order.replace(/^-/, "");
    const desc = f.order.startsWith("-");
    headRow.replaceChildren(...COLUMNS.map(([field, label]) => h("th", field ? {
      class: "sortable", "data-sort": field, "aria-sort": key === field ? (desc ? "descending" : "ascending") : null,
      onclick: () => { f.order = key === field && !desc ? `-${field}` : field; changed(); },
    } : {}, label, field && key === field ? (desc ? " ▾" : " ▴") : "")));
  }

  function renderProjects() {
    const item = (id, name) => h("li", { class: f.project === id ? "active" : "" },
      h("a", { href: "#", "data-project": id, onclick: (ev) => { ev.preventDefault(); f.project = id; changed(); } }, name));
    projectList.replaceChildren(item("", "All projects"),
      ...[...projects.entries()].sort((a, b) => a[1].localeCompare(b[1])).map(([id, name]) => item(id, name)));
  }

  function row(t) {
    const tags = (t.tags || []).map((tag) => h("span", { class: "tag" }, tag));
    const where = t.status === "queued" ? `queue ${queues.get((t.execution || {}).queue) || (t.execution || {}).queue || "?"}`
      : t.last_worker || "";
    return h("tr", { class: "clickable", "data-task": t.id, "data-name": t.name,
      onclick: (ev) => { if (!ev.target.closest("a")) window.location.hash = `#/task/${t.id}`; } },
      h("td", {}, statusBadge(t.status)),
      h("td", {}, h("a", { href: `#/task/${t.id}`, class: "task-name" }, t.name || t.id),
        (t.system_tags || []).includes("archived") ? h("span", { class: "tag muted" }, "archived") : null),
      h("td", {}, projects.get(t.project) || ""),
      h("td", {}, t.type || ""),
      h("td", {}, tags),
      h("td", { title: fmtDate(t.started) }, t.started ? fmtDate(t.started) : "—"),
      h("td", { title: fmtDate(t.last_update) }, fmtAgo(t.last_update)),
      h("td", { class: "num" }, t.last_iteration ?? ""),
      h("td", { class: "muted" }, where));
  }

  async function load(force = false) {
    const data = await call("tasks.get_all", query(f));
    const tasks = data.tasks || [];
    const json = JSON.stringify(tasks);
    if (!force && json === lastJson) return;
    lastJson = json;
    more.hidden = tasks.length <= f.size;
    const shown = tasks.slice(0, f.size);
    count.textContent = `${shown.length}${tasks.length > f.size ? "+" : ""} shown`;
    tbody.replaceChildren(...(shown.length ? shown.map(row)
      : [h("tr", {}, h("td", { colspan: COLUMNS.length, class: "empty" }, "No experiments match these filters."))]));
  }

  async function loadLookups() {
    const [p, q] = await Promise.all([call("projects.get_all", { only_fields: ["id", "name"] }),
      call("queues.get_all", { only_fields: ["id", "name"] })]);
    projects = new Map((p.projects || []).map((x) => [x.id, x.name]));
    queues = new Map((q.queues || []).map((x) => [x.id, x.name]));
    renderProjects();
  }

  function changed() {
    writeFilters(f);
    renderHead();
    renderProjects();
    load(true).catch((err) => toast(err.message, "error"));
  }

  renderHead();
  await loadLookups();
  await load(true);
  const stops = [every(REFRESH_MS, () => load()), every(REFRESH_MS * 5, async () => { await loadLookups(); await load(true); })];
  return () => stops.forEach((stop) => stop());
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
