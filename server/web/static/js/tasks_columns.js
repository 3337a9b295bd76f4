// User-chosen columns of the experiments list: a metric's last, min or max value (from the
// task's last_metrics, keyed by ClearML's metric/variant hashes) or a hyperparameter. The
// choice is kept in localStorage; each column sorts on the server (get_all order_by).

import { dialog, fmtNumber, h } from "./util.js";

const STORE = "shipyard.tasks.columns";
export const STATS = [["value", "last"], ["min_value", "min"], ["max_value", "max"]];

function valid(col) {
  if (!col || typeof col !== "object") return false;
  if (col.kind === "metric") {
    return ["metric", "variant", "mkey", "vkey"].every((k) => typeof col[k] === "string")
      && STATS.some(([stat]) => stat === col.stat);
  }
  return col.kind === "param" && typeof col.section === "string" && typeof col.name === "string";
}

export function loadColumns() {
  try {
    const cols = JSON.parse(localStorage.getItem(STORE) || "[]");
    return Array.isArray(cols) ? cols.filter(valid) : [];
  } catch (_) {
    return [];
  }
}

export function saveColumns(cols) {
  localStorage.setItem(STORE, JSON.stringify(cols));
}

export function columnKey(col) {
  return col.kind === "metric" ? `m:${col.mkey}.${col.vkey}.${col.stat}` : `p:${col.section}/${col.name}`;
}

const dotless = (...parts) => parts.every((p) => !p.includes("."));

// The get_all order_by path; null when a name holds a dot (the path could not reach it).
export function columnField(col) {
  if (col.kind === "metric") return `last_metrics.${col.mkey}.${col.vkey}.${col.stat}`;
  return dotless(col.section, col.name) ? `hyperparams.${col.section}.${col.name}.value` : null;
}

// The get_all only_fields path that brings the column's value.
export function columnProjection(col) {
  if (col.kind === "metric") return `last_metrics.${col.mkey}.${col.vkey}`;
  return dotless(col.section) ? `hyperparams.${col.section}` : "hyperparams";
}

export function columnLabel(col) {
  if (col.kind === "param") return `${col.section}/${col.name}`;
  const stat = STATS.find(([s]) => s === col.stat)[1];
  return `${col.metric}/${col.variant} (${stat})`;
}

export function columnValue(t, col) {
  if (col.kind === "metric") {
    const entry = ((t.last_metrics || {})[col.mkey] || {})[col.vkey];
    return entry ? fmtNumber(entry[col.stat]) : "";
  }
  const p = ((t.hyperparams || {})[col.section] || {})[col.name];
  return p && p.value !== undefined && p.value !== null ? String(p.value) : "";
}

// Every column the given tasks could fill: each metric/variant three times, each parameter once.
export function availableColumns(tasks) {
  const metrics = new Map(), params = new Map();
  for (const t of tasks) {
    for (const [mkey, variants] of Object.entries(t.last_metrics || {})) {
      for (const [vkey, e] of Object.entries(variants || {})) {
        if (e && typeof e.metric === "string") metrics.set(`${mkey}.${vkey}`, { metric: e.metric, variant: e.variant, mkey, vkey });
      }
    }
    for (const [section, items] of Object.entries(t.hyperparams || {})) {
      for (const name of Object.keys(items || {})) params.set(`${section}/${name}`, { kind: "param", section, name });
    }
  }
  const byName = (a, b) => `${a.metric}/${a.variant}`.localeCompare(`${b.metric}/${b.variant}`);
  return {
    metrics: [...metrics.values()].sort(byName).flatMap((m) => STATS.map(([stat]) => ({ kind: "metric", ...m, stat }))),
    params: [...params.values()].sort((a, b) => columnLabel(a).localeCompare(columnLabel(b))),
  };
}

function option(col, chosen) {
  return h("label", { class: "chip column-choice" },
    h("input", { type: "checkbox", value: columnKey(col), "data-column": columnKey(col), checked: chosen.has(columnKey(col)) }),
    columnLabel(col));
}

// A dialog of checkboxes; resolves the new list of columns, or null when cancelled. Chosen
// columns no longer offered (no task in the list has them) stay unless unticked.
export async function chooseColumns(current, available) {
  const chosen = new Set(current.map(columnKey));
  const offered = [...available.metrics, ...available.params];
  const kept = current.filter((c) => !offered.some((o) => columnKey(o) === columnKey(c)));
  const all = [...kept, ...offered];
  const body = h("div", { class: "column-chooser", id: "column_chooser" },
    h("h3", {}, "Metrics"), available.metrics.length ? available.metrics.map((c) => option(c, chosen))
      : h("p", { class: "muted" }, "No metrics reported by the experiments listed."),
    h("h3", {}, "Hyperparameters"), available.params.length ? available.params.map((c) => option(c, chosen))
      : h("p", { class: "muted" }, "No hyperparameters in the experiments listed."),
    kept.length ? [h("h3", {}, "Other chosen columns"), kept.map((c) => option(c, chosen))] : null);
  if (!(await dialog("Columns", body, "Apply"))) return null;
  const ticked = new Set([...body.querySelectorAll("input[data-column]")].filter((i) => i.checked).map((i) => i.value));
  const order = [...current.map(columnKey), ...all.map(columnKey)];
  return all.filter((c) => ticked.has(columnKey(c)))
    .sort((a, b) => order.indexOf(columnKey(a)) - order.indexOf(columnKey(b)));
}
