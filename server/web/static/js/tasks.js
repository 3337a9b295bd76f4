// Experiments list: projects on the left; filters (name, status, tags, archived), sortable
// columns and live statuses (re-queried every few seconds) on the right. The filters live in
// the URL hash, so a reload or a shared link shows the same list. Rows can be selected for
// Compare (2-10) and bulk actions (tasks_bulk.js); metric and hyperparameter columns are the
// user's choice (tasks_columns.js).

import { call } from "./api.js";
import { STATUSES, escapeRegex, every, fmtAgo, fmtDate, h, statusBadge, toast } from "./util.js";
import { compareHash, MAX_TASKS, MIN_TASKS } from "./compare.js";
import { ACTIONS, resultPanel, runBulk } from "./tasks_bulk.js";
import { availableColumns, chooseColumns, columnField, columnKey, columnLabel, columnProjection, columnValue,
  loadColumns, saveColumns } from "./tasks_columns.js";

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

function query(f, columns = []) {
  const body = {
    only_fields: [...FIELDS, ...new Set(columns.map(columnProjection))], order_by: [f.order, "-created"],
    page: 0, page_size: f.size + 1,
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
  let queueDocs = [];
  let lastJson = "";
  let columns = loadColumns();
  let shown = [];
  const selected = new Set();

  const projectList = h("ul", { class: "projects", id: "projects" });
  const tbody = h("tbody", { id: "task_rows" });
  const headRow = h("tr", {});
  const more = h("button", { class: "secondary", id: "more", hidden: true, onclick: () => {
    f.size += PAGE; changed();
  } }, "Show more");
  const count = h("span", { class: "muted", id: "task_count" });
  const selectAll = h("input", { type: "checkbox", id: "select_all", "aria-label": "Select all shown",
    onchange: () => { for (const t of shown) if (selectAll.checked) selected.add(t.id); else selected.delete(t.id); paintSelection(); } });
  const selCount = h("span", { class: "muted", id: "selected_count" });
  const bulkButtons = Object.entries(ACTIONS).map(([key, spec]) => h("button", { class: "secondary", id: `bulk_${key}`,
    "data-bulk": key, onclick: () => bulk(key) }, spec.label));
  const compareBtn = h("button", { class: "primary", id: "bulk_compare", title: `Select ${MIN_TASKS} to ${MAX_TASKS} experiments`,
    onclick: () => { window.location.hash = compareHash(shown.filter((t) => selected.has(t.id)).map((t) => t.id)); } }, "Compare");
  const bulkBar = h("div", { class: "toolbar bulk-bar", id: "bulk_bar" }, selCount, compareBtn, bulkButtons);
  const resultBox = h("div", { id: "bulk_result_box" });
  const columnsBtn = h("button", { class: "secondary", id: "choose_columns",
    onclick: () => pickColumns().catch((err) => toast(err.message, "error")) }, "Columns…");

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
      h("div", { class: "toolbar" }, h("h1", {}, "Experiments"), count, h("span", { class: "spacer" }), columnsBtn),
      h("div", { class: "filters" }, nameInput, tagsInput, h("span", { class: "chips" }, statusBoxes, archived)),
      bulkBar, resultBox,
      h("table", { class: "grid tasks", id: "tasks" }, h("thead", {}, headRow), tbody), more)));

  function allColumns() {
    return [...COLUMNS, ...columns.map((c) => [columnField(c), columnLabel(c), c])];
  }

  function paintSelection() {
    const picked = shown.filter((t) => selected.has(t.id));
    selCount.textContent = picked.length ? `${picked.length} selected` : "Select rows for Compare and bulk actions";
    compareBtn.disabled = picked.length < MIN_TASKS || picked.length > MAX_TASKS;
    for (const b of bulkButtons) {
      b.disabled = !picked.length;
      if (b.dataset.bulk === "archive") b.hidden = f.archived;
      if (b.dataset.bulk === "unarchive") b.hidden = !f.archived;
    }
    selectAll.checked = shown.length > 0 && picked.length === shown.length;
    selectAll.indeterminate = picked.length > 0 && picked.length < shown.length;
    for (const box of tbody.querySelectorAll("input[data-select]")) box.checked = selected.has(box.dataset.select);
  }

  async function bulk(action) {
    const picked = shown.filter((t) => selected.has(t.id));
    const names = new Map(picked.map((t) => [t.id, t.name || t.id]));
    let result;
    try {
      result = await runBulk(action, picked, queueDocs);
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    if (!result) return;
    selected.clear(); // the result panel says what happened to each; a next action starts afresh
    resultBox.replaceChildren(resultPanel(action, result, names, () => resultBox.replaceChildren()));
    await load(true);
  }

  async function pickColumns() {
    const data = await call("tasks.get_all", { ...query(f), only_fields: ["id", "last_metrics", "hyperparams"] });
    const next = await chooseColumns(columns, availableColumns(data.tasks || []));
    if (!next) return;
    columns = next;
    saveColumns(columns);
    const key = f.order.replace(/^-/, "");
    if (key.startsWith("last_metrics.") || key.startsWith("hyperparams.")) {
      if (!columns.some((c) => columnField(c) === key)) f.order = "-last_update";
    }
    changed();
  }

  function renderHead() {
    const key = f.order.replace(/^-/, "");
    const desc = f.order.startsWith("-");
    headRow.replaceChildren(h("th", { class: "select-cell" }, selectAll), ...allColumns().map(([field, label, col]) => h("th", {
      class: field ? "sortable" : null, "data-sort": field, "aria-sort": field && key === field ? (desc ? "descending" : "ascending") : null,
      "data-column": col ? columnKey(col) : null,
      onclick: field ? () => { f.order = key === field && !desc ? `-${field}` : field; changed(); } : null,
    }, label, field && key === field ? (desc ? " ▾" : " ▴") : "")));
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
      onclick: (ev) => { if (!ev.target.closest("a, .select-cell")) window.location.hash = `#/task/${t.id}`; } },
      h("td", { class: "select-cell" }, h("input", { type: "checkbox", "data-select": t.id, "aria-label": `Select ${t.name || t.id}`,
        checked: selected.has(t.id), onchange: (ev) => {
          if (ev.target.checked) selected.add(t.id); else selected.delete(t.id);
          paintSelection();
        } })),
      h("td", {}, statusBadge(t.status)),
      h("td", {}, h("a", { href: `#/task/${t.id}`, class: "task-name" }, t.name || t.id),
        (t.system_tags || []).includes("archived") ? h("span", { class: "tag muted" }, "archived") : null),
      h("td", {}, projects.get(t.project) || ""),
      h("td", {}, t.type || ""),
      h("td", {}, tags),
      h("td", { title: fmtDate(t.started) }, t.started ? fmtDate(t.started) : "—"),
      h("td", { title: fmtDate(t.last_update) }, fmtAgo(t.last_update)),
      h("td", { class: "num" }, t.last_iteration ?? ""),
      h("td", { class: "muted" }, where),
      columns.map((c) => h("td", { class: c.kind === "metric" ? "num" : "value", "data-column": columnKey(c) }, columnValue(t, c))));
  }

  async function load(force = false) {
    const data = await call("tasks.get_all", query(f, columns));
    const tasks = data.tasks || [];
    const json = JSON.stringify(tasks);
    if (!force && json === lastJson) return;
    lastJson = json;
    more.hidden = tasks.length <= f.size;
    shown = tasks.slice(0, f.size);
    for (const id of [...selected]) if (!shown.some((t) => t.id === id)) selected.delete(id);
    count.textContent = `${shown.length}${tasks.length > f.size ? "+" : ""} shown`;
    tbody.replaceChildren(...(shown.length ? shown.map(row)
      : [h("tr", {}, h("td", { colspan: allColumns().length + 1, class: "empty" }, "No experiments match these filters."))]));
    paintSelection();
  }

  async function loadLookups() {
    const [p, q] = await Promise.all([call("projects.get_all", { only_fields: ["id", "name"] }),
      call("queues.get_all", { only_fields: ["id", "name", "system_tags"] })]);
    projects = new Map((p.projects || []).map((x) => [x.id, x.name]));
    queueDocs = q.queues || [];
    queues = new Map(queueDocs.map((x) => [x.id, x.name]));
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
