// Pure series math for the compare view (no DOM, so a test can import it and check numbers):
// smoothing, x-axis modes, log-scale values and the labels of time axes.

export const X_MODES = ["iter", "wall", "relative"];
export const X_LABELS = { iter: "iteration", wall: "wall time", relative: "time since start" };

// The histogram key each x mode is fetched with (events.*_scalar_metrics_iter_histogram).
export function histogramKey(mode) {
  return mode === "iter" ? "iter" : "timestamp";
}

// Exponential moving average with bias correction: the running average starts at 0, so each
// point is divided by (1 - weight^n), n counting the finite points so far. Without it the first
// points would be pulled toward 0. Missing (null / non-finite) points stay missing and do not
// move the average. weight 0 returns the values unchanged.
export function smooth(values, weight) {
  const w = Math.min(Math.max(Number(weight) || 0, 0), 0.999);
  if (w === 0) return values.slice();
  let avg = 0, n = 0;
  return values.map((v) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return null;
    avg = avg * w + (1 - w) * v;
    n += 1;
    return avg / (1 - w ** n);
  });
}

// x values for a mode, from what the histogram returned: iterations as they are, timestamps
// (ms since the epoch) as seconds since the epoch ("wall") or since the series' first point.
export function xValues(xs, mode) {
  if (mode === "iter") return xs.slice();
  const start = mode === "relative" && xs.length ? xs[0] : 0;
  return xs.map((x) => (x - start) / 1000);
}

// log10 of each value for a log-scale axis; zero and negatives have no place there (null).
export function logValues(values) {
  return values.map((v) => (v !== null && Number.isFinite(v) && v > 0 ? Math.log10(v) : null));
}

const pad = (n) => String(n).padStart(2, "0");

// "1h 02m", "3m 05s", "42s", "1.5s": a span of seconds, for relative-time axes.
export function fmtSpan(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const sign = seconds < 0 ? "-" : "";
  const s = Math.abs(seconds);
  if (s < 10 && !Number.isInteger(s)) return `${sign}${Number(s.toFixed(1))}s`;
  const whole = Math.round(s);
  if (whole < 60) return `${sign}${whole}s`;
  if (whole < 3600) return `${sign}${Math.floor(whole / 60)}m ${pad(whole % 60)}s`;
  return `${sign}${Math.floor(whole / 3600)}h ${pad(Math.floor((whole % 3600) / 60))}m`;
}

// "14:03:27" (local time) for wall-time axes, from seconds since the epoch.
export function fmtClock(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const d = new Date(seconds * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function xFormatter(mode) {
  if (mode === "wall") return fmtClock;
  if (mode === "relative") return fmtSpan;
  return null;
}
