// Entry point: loads the session, then routes on the URL hash.
//   #/tasks?status=…&project=…   experiments list        #/task/<id>/<tab>   one experiment
//   #/queues                      queues and entries      #/workers           workers
//   #/compare?ids=a,b,…           2-10 experiments side by side (compare.js)
// Each view renders into <main> and returns a cleanup function (its timers), called on leaving.

import { loadSession } from "./api.js";
import { errorBox, h } from "./util.js";
import { tasksView } from "./tasks.js";
import { taskView } from "./task.js";
import { queuesView } from "./queues.js";
import { workersView } from "./workers.js";
import { compareView } from "./compare.js";

let cleanup = null;
let generation = 0;

export function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  return {
    parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    params: new URLSearchParams(query || ""),
  };
}

async function render() {
  if (cleanup) cleanup();
  cleanup = null;
  const mine = ++generation;
  const { parts, params } = parseHash();
  const main = document.getElementById("main");
  main.replaceChildren();
  const section = parts[0] === "task" || parts[0] === "compare" ? "tasks" : parts[0] || "tasks";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  try {
    let done;
    if (parts[0] === "task" && parts[1]) done = await taskView(main, parts[1], parts[2] || "overview");
    else if (parts[0] === "compare") done = await compareView(main, params);
    else if (parts[0] === "queues") done = await queuesView(main);
    else if (parts[0] === "workers") done = await workersView(main);
    else done = await tasksView(main, params);
    if (mine !== generation) { if (done) done(); } // navigated away while loading
    else cleanup = done || null;
  } catch (err) {
    if (mine === generation) main.replaceChildren(errorBox(err));
  }
}

async function start() {
  const session = await loadSession();
  document.getElementById("user").replaceChildren(h("span", { title: `role: ${session.role}` }, session.user));
  window.addEventListener("hashchange", render);
  await render();
}

start();
