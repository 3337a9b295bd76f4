// Artifacts & models tab: each artifact with its size, hash, preview and a download link (files
// the files listener stores are served through this origin; other URIs are shown as they are).

import { call, fileHref } from "./api.js";
import { fmtBytes, fmtDate, h } from "./util.js";

function link(uri) {
  const href = fileHref(uri, true);
  return href ? h("a", { href, class: "download", download: "" }, "Download") : h("span", { class: "muted" }, "");
}

function artifactRow(a) {
  const preview = (a.type_data || {}).preview;
  return h("tr", { "data-artifact": a.key },
    h("td", {}, h("strong", {}, a.key), a.mode ? h("span", { class: "muted" }, ` (${a.mode})`) : null),
    h("td", {}, a.type || ""),
    h("td", { class: "num" }, a.content_size !== undefined ? fmtBytes(a.content_size) : "—"),
    h("td", { class: "uri" }, h("code", {}, a.uri || ""), preview ? h("details", {}, h("summary", {}, "preview"),
      h("pre", { class: "code" }, String(preview))) : null),
    h("td", { class: "muted" }, a.timestamp ? fmtDate(Number(a.timestamp) * 1000) : ""),
    h("td", {}, link(a.uri)));
}

async function modelsSection(t) {
  const refs = [...((t.models || {}).input || []).map((m) => ({ ...m, dir: "input" })),
    ...((t.models || {}).output || []).map((m) => ({ ...m, dir: "output" }))];
  if (!refs.length) return h("p", { class: "muted" }, "No models.");
  const ids = refs.map((m) => m.model).filter(Boolean);
  const found = ids.length ? (await call("models.get_all", { id: ids }).catch(() => ({ models: [] }))).models || [] : [];
  const byId = new Map(found.map((m) => [m.id, m]));
  return h("table", { class: "grid compact", id: "models" },
    h("thead", {}, h("tr", {}, ["Name", "Direction", "Framework", "URI", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, refs.map((r) => {
      const m = byId.get(r.model) || {};
      return h("tr", {}, h("td", {}, r.name || m.name || r.model), h("td", {}, r.dir), h("td", {}, m.framework || ""),
        h("td", { class: "uri" }, h("code", {}, m.uri || "")), h("td", {}, link(m.uri)));
    })));
}

export async function artifactsTab(body, ctx) {
  let last = "";
  async function render(t) {
    const artifacts = (t.execution || {}).artifacts || [];
    const key = JSON.stringify([artifacts, t.models]);
    if (key === last) return;
    last = key;
    const table = artifacts.length ? h("table", { class: "grid compact", id: "artifacts" },
      h("thead", {}, h("tr", {}, ["Key", "Type", "Size", "URI", "Stored", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, artifacts.map(artifactRow))) : h("p", { class: "muted" }, "No artifacts.");
    body.replaceChildren(h("div", { class: "card wide" }, h("h3", {}, "Artifacts"), table),
      h("div", { class: "card wide" }, h("h3", {}, "Models"), await modelsSection(t)));
  }
  await render(ctx.task);
  return { update: render };
}
