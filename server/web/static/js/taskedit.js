// Edit tab (drafts only, status "created"): hyperparameters, configuration objects, container
// and pip requirements. Saving sends tasks.edit (hyperparams, configuration, container are
// replaced whole, as the protocol does) and tasks.set_requirements when the list changed.
// Enqueueing from the header saves pending edits first (see task.js).

import { call } from "./api.js";
import { h, toast } from "./util.js";
import { sortedSections } from "./task_params.js";

function reqText(value) {
  if (Array.isArray(value)) return value.join("\n");
  return value ? String(value) : "";
}

export function editTab(body, ctx) {
  const t = ctx.task;
  let dirty = false;
  const mark = () => { dirty = true; saveBtn.disabled = false; state.textContent = "Unsaved changes"; };

  const paramRows = h("tbody", { id: "edit_params" });
  function paramRow(section, name, p) {
    const keep = { type: (p && p.type) || "", description: (p && p.description) || "" };
    const row = h("tr", { "data-param": `${section}/${name}` },
      h("td", {}, h("input", { class: "p-section", value: section, "aria-label": "Section", oninput: mark })),
      h("td", {}, h("input", { class: "p-name", value: name, "aria-label": "Name", oninput: mark })),
      h("td", {}, h("input", { class: "p-value", value: p && p.value !== undefined ? String(p.value) : "",
        "aria-label": `Value of ${section}/${name}`, "data-edit-param": `${section}/${name}`, oninput: mark })),
      h("td", { class: "muted" }, keep.type),
      h("td", {}, h("button", { type: "button", class: "link", title: "Remove", onclick: () => { row.remove(); mark(); } }, "✕")));
    row.keep = keep;
    return row;
  }
  for (const [section, params] of sortedSections(t.hyperparams)) {
    for (const [name, p] of Object.entries(params || {}).sort(([a], [b]) => a.localeCompare(b))) paramRows.append(paramRow(section, name, p));
  }

  const configs = h("div", { id: "edit_configs" });
  function configBlock(name, c) {
    const block = h("div", { class: "config-edit", "data-config": name },
      h("div", { class: "row" }, h("input", { class: "c-name", value: name, "aria-label": "Configuration name", oninput: mark }),
        h("input", { class: "c-type", value: (c && c.type) || "", placeholder: "type", "aria-label": "Type", oninput: mark }),
        h("button", { type: "button", class: "link", onclick: () => { block.remove(); mark(); } }, "Remove")),
      h("textarea", { class: "c-value code", rows: 8, spellcheck: "false", value: c && c.value !== undefined ? String(c.value) : "",
        "aria-label": `Value of ${name}`, oninput: mark }));
    block.keep = { description: (c && c.description) || "" };
    return block;
  }
  for (const [name, c] of Object.entries(t.configuration || {}).sort(([a], [b]) => a.localeCompare(b))) configs.append(configBlock(name, c));

  const c = t.container || {};
  const image = h("input", { id: "edit_image", value: c.image || "", placeholder: "e.g. python:3.11-slim", oninput: mark });
  const args = h("input", { id: "edit_args", value: c.arguments || "", placeholder: "docker run arguments", oninput: mark });
  const setup = h("textarea", { id: "edit_setup", rows: 3, class: "code", value: c.setup_shell_script || "", spellcheck: "false", oninput: mark });
  const reqs = (t.script || {}).requirements || {};
  const pip = h("textarea", { id: "edit_pip", rows: 8, class: "code", value: reqText(reqs.pip), spellcheck: "false", oninput: mark });

  const saveBtn = h("button", { type: "submit", class: "primary", id: "edit_save", disabled: true }, "Save");
  const state = h("span", { class: "muted", id: "edit_state" }, "No changes");

  function collect() {
    const hyperparams = {};
    for (const row of paramRows.querySelectorAll("tr")) {
      const section = row.querySelector(".p-section").value.trim() || "General";
      const name = row.querySelector(".p-name").value.trim();
      if (!name) continue;
      hyperparams[section] = hyperparams[section] || {};
      hyperparams[section][name] = { section, name, value: row.querySelector(".p-value").value, ...row.keep };
    }
    const configuration = {};
    for (const block of configs.querySelectorAll(".config-edit")) {
      const name = block.querySelector(".c-name").value.trim();
      if (!name) continue;
      configuration[name] = { name, value: block.querySelector(".c-value").value,
        type: block.querySelector(".c-type").value.trim(), ...block.keep };
    }
    const container = { image: image.value.trim(), arguments: args.value.trim(), setup_shell_script: setup.value };
    return { hyperparams, configuration, container };
  }

  async function save() {
    const fields = collect();
    await call("tasks.edit", { task: t.id, ...fields });
    if (pip.value !== reqText(reqs.pip)) {
      await call("tasks.set_requirements", { task: t.id, requirements: { ...reqs, pip: pip.value } });
    }
    dirty = false;
    saveBtn.disabled = true;
    state.textContent = "Saved";
    toast("Saved");
    await ctx.reload();
  }

  const form = h("form", { class: "edit-form", id: "edit_form", onsubmit: async (ev) => {
    ev.preventDefault();
    saveBtn.disabled = true;
    try { await save(); } catch (err) { toast(err.message, "error"); saveBtn.disabled = false; }
  } },
  h("div", { class: "card wide" }, h("h3", {}, "Hyperparameters"),
    h("table", { class: "grid compact" }, h("thead", {}, h("tr", {}, ["Section", "Name", "Value", "Type", ""].map((x) => h("th", {}, x)))), paramRows),
    h("button", { type: "button", class: "secondary", id: "add_param", onclick: () => {
      const row = paramRow("Args", "", null);
      paramRows.append(row);
      row.querySelector(".p-name").focus();
      mark();
    } }, "Add parameter")),
  h("div", { class: "card wide" }, h("h3", {}, "Configuration objects"), configs,
    h("button", { type: "button", class: "secondary", id: "add_config", onclick: () => { configs.append(configBlock("", null)); mark(); } }, "Add configuration")),
  h("div", { class: "card wide" }, h("h3", {}, "Container"),
    h("label", {}, "Image", image), h("label", {}, "Arguments", args), h("label", {}, "Setup shell script", setup)),
  h("div", { class: "card wide" }, h("h3", {}, "Python requirements (pip)"), pip),
  h("div", { class: "sticky-bar" }, saveBtn, state));
  body.append(form);

  return {
    dirty: () => dirty,
    save,
  };
}
