// Configuration tab: hyperparameters by section, configuration objects, container settings.

import { fill, h } from "./util.js";

export function sortedSections(hyperparams) {
  return Object.entries(hyperparams || {}).sort(([a], [b]) => a.localeCompare(b));
}

function paramsTable(hyperparams) {
  const sections = sortedSections(hyperparams);
  if (!sections.length) return h("p", { class: "muted" }, "No hyperparameters.");
  return h("table", { class: "grid compact params", id: "hyperparams" },
    h("thead", {}, h("tr", {}, ["Section", "Name", "Value", "Type", "Description"].map((c) => h("th", {}, c)))),
    h("tbody", {}, sections.flatMap(([section, params]) =>
      Object.entries(params || {}).sort(([a], [b]) => a.localeCompare(b)).map(([name, p]) =>
        h("tr", { "data-param": `${section}/${name}` },
          h("td", { class: "muted" }, section), h("td", {}, name),
          h("td", { class: "value" }, p && p.value !== undefined ? String(p.value) : ""),
          h("td", { class: "muted" }, (p && p.type) || ""),
          h("td", { class: "muted" }, (p && p.description && p.description !== "None") ? p.description : ""))))));
}

function configurations(configuration) {
  const items = Object.entries(configuration || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!items.length) return h("p", { class: "muted" }, "No configuration objects.");
  return items.map(([name, c]) => h("details", { class: "config", open: true, "data-config": name },
    h("summary", {}, name, c && c.type ? h("span", { class: "muted" }, ` (${c.type})`) : null),
    c && c.description ? h("p", { class: "muted" }, c.description) : null,
    h("pre", { class: "code" }, c && c.value !== undefined ? String(c.value) : "")));
}

export function configurationTab(body, ctx) {
  function render(t) {
    const c = t.container || {};
    fill(body,
      h("div", { class: "card wide" }, h("h3", {}, "Hyperparameters"), paramsTable(t.hyperparams)),
      h("div", { class: "card wide" }, h("h3", {}, "Configuration objects"), configurations(t.configuration)),
      c.image || c.arguments || c.setup_shell_script ? h("div", { class: "card wide" }, h("h3", {}, "Container"),
        h("pre", { class: "code" }, [`image: ${c.image || ""}`, `arguments: ${c.arguments || ""}`,
          c.setup_shell_script ? `setup script:\n${c.setup_shell_script}` : ""].filter(Boolean).join("\n"))) : null);
    if (t.status === "created") {
      body.prepend(h("p", { class: "hint" }, "This experiment is a draft: ",
        h("a", { href: "#", id: "edit_link", onclick: (ev) => { ev.preventDefault(); ctx.openTab("edit"); } }, "edit it"),
        ", then enqueue it."));
    }
  }
  render(ctx.task);
  return { update: render };
}
