// The ClearML REST API through this origin's /api proxy, and links to stored files.

let session = null;

export class ApiError extends Error {
  constructor(endpoint, meta) {
    super(`${endpoint}: ${meta.result_msg || "request failed"} (${meta.result_code}/${meta.result_subcode})`);
    this.code = meta.result_code;
    this.subcode = meta.result_subcode;
  }
}

function toSignIn() {
  window.location.assign("/login");
  return new Promise(() => {}); // the page is going away
}

export async function loadSession() {
  const resp = await fetch("/session", { credentials: "same-origin" });
  if (resp.status === 401) return toSignIn();
  session = await resp.json();
  return session;
}

export function currentSession() {
  return session;
}

export async function call(endpoint, body = {}) {
  const resp = await fetch(`/api/${endpoint}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Shipyard-Web": "1" },
    body: JSON.stringify(body),
  });
  if (resp.status === 401) return toSignIn();
  let payload;
  try {
    payload = await resp.json();
  } catch (_) {
    throw new ApiError(endpoint, { result_code: resp.status, result_msg: resp.statusText });
  }
  if (!payload.meta || payload.meta.result_code !== 200) throw new ApiError(endpoint, payload.meta || {});
  return payload.data;
}

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]", "0.0.0.0"]);

// A URI the files listener serves, as a link through this origin (the session cookie is
// enough there); null for anything else (s3://, file://, another host).
export function fileHref(uri, download = false) {
  if (!uri || !session || !/^https?:\/\//i.test(uri)) return null;
  let url, files;
  try {
    url = new URL(uri);
    files = new URL(session.files_url);
  } catch (_) {
    return null;
  }
  const port = (u) => u.port || (u.protocol === "https:" ? "443" : "80");
  const sameHost = url.hostname === files.hostname || url.hostname === window.location.hostname ||
    (LOOPBACK.has(url.hostname) && LOOPBACK.has(files.hostname));
  if (!sameHost || port(url) !== port(files)) return null;
  const base = files.pathname.replace(/\/+$/, "");
  if (!url.pathname.startsWith(`${base}/`)) return null;
  const path = url.pathname.slice(base.length + 1);
  return `/files/${path}${download ? "?download=1" : ""}`;
}
