// Colours for the Plots tab: CSS colour strings as a figure gives them (validated, since an
// SDK may write "rgba (31, 119, 180, 255)"), and colour scales (a plotly [[t, colour], ...]
// list or one of a few scale names) as functions from 0..1 to [r, g, b].

const NAMED = {
  viridis: ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"],
  plasma: ["#0d0887", "#46039f", "#7201a8", "#9c179e", "#bd3786", "#d8576b", "#ed7953", "#fb9f3a", "#fdca26", "#f0f921"],
  cividis: ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c", "#e4cf5b", "#fee838"],
  greys: ["#000000", "#ffffff"],
  blues: ["#08306b", "#2171b5", "#6baed6", "#c6dbef", "#f7fbff"],
  reds: ["#fff5f0", "#fcbba1", "#fb6a4a", "#cb181d", "#67000d"],
  hot: ["#000000", "#e60000", "#ffd200", "#ffffff"],
  jet: ["#000083", "#003caa", "#05ffff", "#ffff00", "#fa0000", "#800000"],
  rdbu: ["#050aac", "#6a89f7", "#bebebe", "#dcaa84", "#e6915a", "#b20a1c"],
  ylgnbu: ["#081d58", "#253494", "#225ea8", "#1d91c0", "#41b6c4", "#7fcdbb", "#c7e9b4", "#edf8d9", "#ffffd9"],
  blackbody: ["#000000", "#e60000", "#e6d200", "#ffffff", "#a0c8ff"],
};

let probe = null;

// [r, g, b, a] for a CSS colour string, or null when the browser does not take it as a colour.
export function parseColor(text) {
  if (typeof text !== "string" || !text.trim() || !CSS.supports("color", text)) return null;
  probe = probe || document.createElement("canvas").getContext("2d");
  probe.fillStyle = "#000";
  probe.fillStyle = text;
  const value = probe.fillStyle;  // "#rrggbb" or "rgba(r, g, b, a)"
  if (value.startsWith("#")) return [1, 3, 5].map((i) => parseInt(value.slice(i, i + 2), 16)).concat(1);
  const parts = value.replace(/[^\d.,]/g, "").split(",").map(Number);
  return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
}

// The colour a figure asked for, if it is one; otherwise `fallback`.
export function cssColor(text, fallback) {
  return typeof text === "string" && text.trim() && CSS.supports("color", text) ? text : fallback;
}

function stops(spec) {
  if (Array.isArray(spec) && spec.length >= 2) {
    const list = spec.map(([t, c]) => [Number(t), parseColor(c)]).filter(([t, c]) => Number.isFinite(t) && c);
    if (list.length >= 2) return list.sort((a, b) => a[0] - b[0]);
  }
  const name = typeof spec === "string" ? spec.toLowerCase() : "viridis";
  const colors = NAMED[name] || NAMED.viridis;
  return colors.map((c, i) => [i / (colors.length - 1), parseColor(c)]);
}

// t in 0..1 -> [r, g, b]; `reverse` flips the scale (plotly's reversescale).
export function colorScale(spec, reverse = false) {
  const list = stops(spec);
  return (value) => {
    let t = Math.min(1, Math.max(0, Number.isFinite(value) ? value : 0));
    if (reverse) t = 1 - t;
    let i = 1;
    while (i < list.length - 1 && list[i][0] < t) i += 1;
    const [t0, c0] = list[i - 1], [t1, c1] = list[i];
    const f = t1 > t0 ? Math.min(1, Math.max(0, (t - t0) / (t1 - t0))) : 0;
    return [0, 1, 2].map((k) => Math.round(c0[k] + (c1[k] - c0[k]) * f));
  };
}

export function rgbText([r, g, b]) {
  return `rgb(${r},${g},${b})`;
}

// Dark text on light cells, light text on dark ones.
export function textOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#111827" : "#ffffff";
}
