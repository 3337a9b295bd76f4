// Console tab: the task's log (events.get_task_log), newest page first, earlier pages on demand;
// new lines are fetched every second and a half ("follow" keeps the view at the bottom).
// Search highlights matches in what is loaded, steps through them, or keeps only matching lines.
// Each line's time can be shown in front of it (a toggle the browser remembers).

import { call } from "./api.js";
import { RUNNING, every, fmtDate, h } from "./util.js";

const PAGE = 1000;
const POLL_MS = 1500;
const TIMESTAMPS_KEY = "shipyard.console.timestamps";

function rememberedTimestamps() {
  try { return localStorage.getItem(TIMESTAMPS_KEY) === "1"; } catch (_) { return false; }
}

export async function consoleTab(body, ctx) {
  const taskId = ctx.task.id;
  const lines = []; // {ts, level, text}
  let firstTs = null, lastTs = null, total = 0, loaded = 0, moreEarlier = false;
  let matches = [], matchIndex = -1;

  const view = h("div", { class: "console", id: "console", tabindex: "0" });
  const follow = h("input", { type: "checkbox", id: "console_follow", checked: RUNNING.has(ctx.task.status) });
  const search = h("input", { type: "search", id: "console_search", placeholder: "Search the console…",
    oninput: () => paint(), onkeydown: (ev) => { if (ev.key === "Enter") { ev.preventDefault(); step(ev.shiftKey ? -1 : 1); } } });
  const onlyMatching = h("input", { type: "checkbox", id: "console_only", onchange: () => paint() });
  const timestamps = h("input", { type: "checkbox", id: "console_timestamps", checked: rememberedTimestamps(),
    onchange: () => {
      try { localStorage.setItem(TIMESTAMPS_KEY, timestamps.checked ? "1" : "0"); } catch (_) { /* private mode */ }
      paint();
    } });
  const matchInfo = h("span", { class: "muted", id: "console_matches" });
  const earlier = h("button", { class: "secondary", id: "console_earlier", hidden: true, onclick: () => loadEarlier() }, "Load earlier lines");
  const status = h("span", { class: "muted", id: "console_status" });

  body.append(h("div", { class: "toolbar console-bar" },
    search, h("button", { class: "secondary", title: "Previous match (Shift+Enter)", onclick: () => step(-1) }, "↑"),
    h("button", { class: "secondary", title: "Next match (Enter)", onclick: () => step(1) }, "↓"), matchInfo,
    h("label", { class: "chip" }, onlyMatching, "Only matching lines"),
    h("label", { class: "chip" }, timestamps, "Timestamps"),
    h("span", { class: "spacer" }),
    h("label", { class: "chip" }, follow, "Follow"), status),
    earlier, view);

  function toLines(events) {
    const out = [];
    for (const e of events) {
      const level = String(e.level || "info").toLowerCase();
      for (const text of String(e.msg ?? "").replace(/\n$/, "").split("\n")) out.push({ ts: e.timestamp, level, text });
    }
    return out;
  }

  function note(events) {
    loaded += events.length;
    if (events.length) {
      firstTs = firstTs === null ? events[0].timestamp : Math.min(firstTs, events[0].timestamp);
      lastTs = lastTs === null ? events[events.length - 1].timestamp : Math.max(lastTs, events[events.length - 1].timestamp);
    }
  }

  function lineEl(line, rx) {
    const cls = `line lvl-${line.level}`;
    const stamp = timestamps.checked ? h("span", { class: "ts" }, fmtDate(line.ts)) : null;
    if (!rx) return h("div", { class: cls, title: fmtDate(line.ts) }, stamp, line.text || " ");
    const parts = [];
    let at = 0;
    for (const m of line.text.matchAll(rx)) {
      if (m.index > at) parts.push(line.text.slice(at, m.index));
      parts.push(h("mark", {}, m[0]));
      at = m.index + m[0].length;
      if (!m[0].length) break;
    }
    parts.push(line.text.slice(at));
    return h("div", { class: cls, title: fmtDate(line.ts) }, stamp, parts);
  }

  function paint() {
    const term = search.value;
    const rx = term ? new RegExp(term.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi") : null;
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 40;
    const test = rx ? new RegExp(rx.source, "i") : null;
    const shown = test && onlyMatching.checked ? lines.filter((l) => test.test(l.text)) : lines;
    view.replaceChildren(...(shown.length ? shown.map((l) => lineEl(l, rx))
      : [h("div", { class: "muted" }, lines.length ? "No matching lines." : "No console output yet.")]));
    matches = rx ? [...view.querySelectorAll("mark")] : [];
    matchIndex = -1;
    matchInfo.textContent = rx ? `${matches.length} match${matches.length === 1 ? "" : "es"}` : "";
    earlier.hidden = !moreEarlier;
    status.textContent = statusText();
    if (follow.checked && (atBottom || !rx)) view.scrollTop = view.scrollHeight;
  }

  function statusText() {
    return `${lines.length} lines${loaded < total ? ` (${loaded} of ${total} log events loaded)` : ""}`;
  }

  function step(delta) {
    if (!matches.length) return;
    if (matchIndex >= 0) matches[matchIndex].classList.remove("current");
    matchIndex = (matchIndex + delta + matches.length) % matches.length;
    follow.checked = false;
    matches[matchIndex].classList.add("current");
    matches[matchIndex].scrollIntoView({ block: "center" });
    matchInfo.textContent = `${matchIndex + 1} / ${matches.length}`;
  }

  async function loadLatest() {
    const data = await call("events.get_task_log", { task: taskId, batch_size: PAGE, navigate_earlier: true, order: "asc" });
    const events = data.events || [];
    total = data.total || 0;
    note(events);
    lines.push(...toLines(events));
    moreEarlier = events.length >= PAGE || total > loaded;
  }

  async function loadEarlier() {
    if (firstTs === null) return;
    const data = await call("events.get_task_log", { task: taskId, batch_size: PAGE, navigate_earlier: true,
      order: "asc", from_timestamp: firstTs });
    const events = data.events || [];
    note(events);
    lines.unshift(...toLines(events));
    moreEarlier = events.length >= PAGE;
    const keep = view.scrollHeight - view.scrollTop;
    follow.checked = false;
    paint();
    view.scrollTop = view.scrollHeight - keep;
  }

  async function poll() {
    const body = { task: taskId, batch_size: PAGE, navigate_earlier: false, order: "asc" };
    if (lastTs !== null) body.from_timestamp = lastTs;
    const data = await call("events.get_task_log", body);
    const events = data.events || [];
    if (!events.length && data.total === total) return;
    total = data.total || total;
    note(events);
    const fresh = toLines(events);
    lines.push(...fresh);
    if (search.value || !view.querySelector(".line")) { paint(); return; }
    view.append(...fresh.map((l) => lineEl(l, null))); // plain append: no search to re-run
    status.textContent = statusText();
    if (follow.checked) view.scrollTop = view.scrollHeight;
  }

  await loadLatest();
  paint();
  view.scrollTop = view.scrollHeight;
  const stop = every(POLL_MS, poll);
  return {
    stop,
    update(t) { if (RUNNING.has(t.status) && !follow.checked && !search.value) follow.checked = true; },
  };
}
