// Script tab (repository, branch, commit, entry point and the uncommitted diff, rendered per
// file with added and removed lines marked) and Requirements tab (pip, conda, the original list).

import { copyable, h, keyValueTable } from "./util.js";

// A unified diff as files with hunks; a diff that is not one (the SDK stores the whole script
// there when there is no repository) is shown as a plain listing.
export function renderDiff(text) {
  if (!text) return h("p", { class: "muted" }, "No uncommitted changes.");
  const lines = text.replace(/\n$/, "").split("\n");
  if (!lines.some((l) => l.startsWith("diff --git") || l.startsWith("@@") || l.startsWith("--- "))) {
    return h("div", { class: "diff" }, h("div", { class: "diff-file" }, h("div", { class: "diff-name" }, "Script (no repository)"),
      h("pre", { class: "code" }, lines.map((l, i) => h("div", { class: "line" }, h("span", { class: "ln" }, i + 1), l)))));
  }
  const files = [];
  let current = null;
  let oldNo = 0, newNo = 0;
  for (const line of lines) {
    if (line.startsWith("diff --git")) {
      const m = line.match(/ b\/(.*)$/);
      current = { name: m ? m[1] : line.slice(11), rows: [], added: 0, removed: 0 };
      files.push(current);
      continue;
    }
    if (!current) { current = { name: "changes", rows: [], added: 0, removed: 0 }; files.push(current); }
    if (/^(index |--- |\+\+\+ |new file mode|deleted file mode|similarity|rename |old mode|new mode)/.test(line)) {
      if (line.startsWith("+++ ") && current.name === "changes") current.name = line.slice(4).replace(/^b\//, "");
      continue;
    }
    const hunk = line.match(/^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$/);
    if (hunk) {
      oldNo = Number(hunk[1]); newNo = Number(hunk[2]);
      current.rows.push(h("div", { class: "line hunk" }, h("span", { class: "ln" }, "…"), h("span", { class: "ln" }, "…"), line));
    } else if (line.startsWith("+")) {
      current.added += 1;
      current.rows.push(h("div", { class: "line add" }, h("span", { class: "ln" }, ""), h("span", { class: "ln" }, newNo++), line));
    } else if (line.startsWith("-")) {
      current.removed += 1;
      current.rows.push(h("div", { class: "line del" }, h("span", { class: "ln" }, oldNo++), h("span", { class: "ln" }, ""), line));
    } else if (line.startsWith("\\")) {
      current.rows.push(h("div", { class: "line muted" }, h("span", { class: "ln" }, ""), h("span", { class: "ln" }, ""), line));
    } else {
      current.rows.push(h("div", { class: "line" }, h("span", { class: "ln" }, oldNo++), h("span", { class: "ln" }, newNo++), line));
    }
  }
  return h("div", { class: "diff", id: "diff" }, files.map((f) => h("details", { class: "diff-file", open: true },
    h("summary", { class: "diff-name" }, f.name, " ", h("span", { class: "add-count" }, `+${f.added}`), " ",
      h("span", { class: "del-count" }, `−${f.removed}`)),
    h("pre", { class: "code" }, f.rows))));
}

export function scriptTab(body, ctx) {
  function render(t) {
    const s = t.script || {};
    const repo = s.repository || "";
    body.replaceChildren(
      h("div", { class: "card wide" }, h("h3", {}, "Source"), keyValueTable([
        ["Repository", repo ? copyable(repo) : h("span", { class: "muted" }, "none (the script itself is stored below)")],
        ["Branch", s.branch || "—"],
        s.tag ? ["Tag", s.tag] : null,
        ["Commit", s.version_num ? copyable(s.version_num) : "—"],
        ["Entry point", s.entry_point || "—"],
        ["Working dir", s.working_dir || "."],
        ["Python", s.binary || "—"],
      ])),
      h("div", { class: "card wide" }, h("h3", {}, repo ? "Uncommitted changes" : "Script"), renderDiff(s.diff || "")));
  }
  render(ctx.task);
  return { update: render };
}

function asText(value) {
  if (Array.isArray(value)) return value.join("\n");
  return value ? String(value) : "";
}

export function requirementsTab(body, ctx) {
  function render(t) {
    const reqs = (t.script || {}).requirements || {};
    const block = (title, value, id) => value ? h("div", { class: "card wide" }, h("h3", {}, title),
      h("pre", { class: "code", id }, asText(value))) : null;
    const blocks = [
      block("Python packages (pip)", reqs.pip, "req_pip"),
      block("As first recorded (before the agent froze them)", reqs.org_pip, "req_org_pip"),
      block("Conda", reqs.conda, "req_conda"),
    ].filter(Boolean);
    body.replaceChildren(...(blocks.length ? blocks
      : [h("p", { class: "muted" }, "No requirements recorded: the agent installs the repository's requirements.txt, if it has one.")]));
    if (t.status === "created") {
      body.append(h("p", {}, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); ctx.openTab("edit"); } },
        "Edit the requirements of this draft")));
    }
  }
  render(ctx.task);
  return { update: render };
}
