// DOM building, formatting and small dialogs shared by the views.
// Everything on the page is built with h()/s(): text always goes in as text nodes, never as
// HTML, so task names, logs and parameters cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";
const PROPS = new Set(["value", "checked", "selected", "disabled", "readOnly", "open", "multiple"]);

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (PROPS.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return append(el, children);
}

// Replace el's children; null/false children are skipped (replaceChildren would print "null").
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  return append(el, children);
}

export const STATUSES = ["created", "queued", "in_progress", "stopped", "completed", "failed",
  "published", "closed"];
export const RUNNING = new Set(["queued", "in_progress"]);

export function statusBadge(status) {
  const label = (status || "unknown").replace("_", " ");
  return h("span", { class: `status st-${status || "unknown"}`, "data-status": status || "" }, label);
}

function parseTime(value) {
  if (value === null || value === undefined || value === "") return null;
  const d = typeof value === "number" ? new Date(value) : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDate(value) {
  const d = parseTime(value);
  if (!d) return "—";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(value) {
  const d = parseTime(value);
  if (!d) return "—";
  const secs = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (secs < 60) return `${Math.round(secs)} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)} h ago`;
  return fmtDate(value);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  let left = Math.max(0, Math.round(seconds));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (left >= size) { parts.push(`${Math.floor(left / size)}${unit}`); left %= size; }
  }
  if (left || !parts.length) parts.push(`${left}s`);
  return parts.join(" ");
}

export function secondsBetween(a, b) {
  const da = parseTime(a), db = parseTime(b);
  return da && db ? (db.getTime() - da.getTime()) / 1000 : null;
}

export function fmtBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
  let value = Number(n);
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (value < 1024 || unit === "GiB") return `${unit === "B" ? value : value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return String(n);
}

export function fmtNumber(v) {
  if (v === null || v === undefined || v === "") return "—";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  if (Number.isInteger(n)) return String(n);
  const abs = Math.abs(n);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? n.toExponential(3) : String(Number(n.toPrecision(6)));
}

export function escapeRegex(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = h("div", { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 3500);
}

export function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" }, String(err && err.message ? err.message : err));
}

// A periodic job that skips while the page is hidden and never overlaps itself.
export function every(ms, fn) {
  let busy = false;
  const id = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try { await fn(); } catch (err) { console.warn(err); } finally { busy = false; }
  }, ms);
  return () => clearInterval(id);
}

// A modal form (title, body, Cancel / okLabel); resolves true when confirmed.
export function dialog(title, body, okLabel) {
  return new Promise((resolve) => {
    const form = h("form", { method: "dialog", class: "dialog-form" },
      h("h2", {}, title), body,
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "secondary", value: "cancel", onclick: () => close(false) }, "Cancel"),
        h("button", { type: "submit", class: "primary", value: "ok", id: "dialog_ok" }, okLabel)));
    const dlg = h("dialog", { class: "dialog" }, form);
    const close = (ok) => { dlg.close(); dlg.remove(); resolve(ok); };
    form.addEventListener("submit", (ev) => { ev.preventDefault(); close(true); });
    dlg.addEventListener("cancel", (ev) => { ev.preventDefault(); close(false); });
    document.body.append(dlg);
    dlg.showModal();
    const first = dlg.querySelector("input, select, textarea");
    if (first) { first.focus(); if (first.select) first.select(); }
  });
}

export async function askText(title, label, initial = "", okLabel = "OK") {
  const input = h("input", { value: initial, id: "dialog_input", required: true, spellcheck: "false" });
  const ok = await dialog(title, h("label", {}, label, input), okLabel);
  return ok ? input.value.trim() : null;
}

export async function confirmAction(title, text, okLabel = "Confirm") {
  return dialog(title, h("p", {}, text), okLabel);
}

export function keyValueTable(rows, cls = "kv") {
  return h("table", { class: cls }, h("tbody", {},
    rows.filter((r) => r).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
}

export function copyable(text) {
  return h("code", { class: "copyable", title: "Click to copy", onclick: async () => {
    try { await navigator.clipboard.writeText(text); toast("Copied"); } catch (_) { /* no clipboard */ }
  } }, text);
}
