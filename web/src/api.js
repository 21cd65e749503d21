// The Slipway API as the page uses it: bearer token from sessionStorage,
// JSON in and out, errors turned into words.

const TOKEN_KEY = "slipway.token";
const WORKSPACE_KEY = "slipway.workspace";

// takeFragment moves "#token=...&workspace=..." into sessionStorage and
// strips it from the address bar (and so from history and bookmarks).
export function takeFragment() {
  const frag = location.hash.replace(/^#/, "");
  if (!/(^|&)(token|workspace)=/.test(frag)) return;
  const p = new URLSearchParams(frag);
  if (p.get("token")) sessionStorage.setItem(TOKEN_KEY, p.get("token"));
  if (p.get("workspace")) sessionStorage.setItem(WORKSPACE_KEY, p.get("workspace"));
  history.replaceState(history.state, "", location.pathname + location.search + "#/");
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  get workspace() { return sessionStorage.getItem(WORKSPACE_KEY) || ""; },
  setWorkspace(ws) { sessionStorage.setItem(WORKSPACE_KEY, ws); },
  signOut() { sessionStorage.removeItem(TOKEN_KEY); },
  // subject is the token's "sub" claim, for display only: the server decides.
  get subject() {
    try {
      const part = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)).sub || "";
    } catch {
      return "";
    }
  },
};

// ApiError is a failed call: the HTTP status and the API's error object.
export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = body && body.error ? body.error : {};
    super(e.message || fallback || `The server answered ${status}.`);
    this.status = status;
    this.code = e.code || "";
    this.line = e.line || 0;
    this.field = e.field || "";
  }
}

// Busy tracking drives the page's progress bar.
let busy = 0;
const busyListeners = new Set();
export function onBusy(f) { busyListeners.add(f); }
function setBusy(delta) {
  busy += delta;
  for (const f of busyListeners) f(busy > 0);
}

let unauthorized = () => {};
export function onUnauthorized(f) { unauthorized = f; }

const STATUS_WORDS = {
  0: "The server could not be reached. Check that Slipway is running, then try again.",
  502: "The server is not answering (bad gateway). Try again in a moment.",
  503: "The server is not ready yet. Try again in a moment.",
  504: "The server took too long to answer. Try again.",
};

// request sends one API call. opts: method, body (JSON), headers, quiet (no
// progress bar), signal, raw (return the Response without reading it).
export async function request(path, opts = {}) {
  const headers = { Accept: "application/json", ...(opts.headers || {}) };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  if (!opts.quiet) setBusy(1);
  let res;
  try {
    res = await fetch(path, { method: opts.method || "GET", headers, body, signal: opts.signal, cache: "no-store" });
  } catch (err) {
    if (!opts.quiet) setBusy(-1);
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, null, STATUS_WORDS[0]);
  }
  try {
    if (opts.raw && res.ok) return res;
    const text = await res.text();
    let data = null;
    if (text && (res.headers.get("Content-Type") || "").includes("json")) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const err = new ApiError(res.status, data, STATUS_WORDS[res.status] || `The server answered ${res.status} ${res.statusText}.`);
      if (res.status === 401) unauthorized(err);
      throw err;
    }
    return { data, etag: res.headers.get("ETag"), res };
  } finally {
    if (!opts.quiet) setBusy(-1);
  }
}

const enc = encodeURIComponent;

export const api = {
  info: () => request("/api/v1/info", { quiet: true }),
  workspace: (ws) => request(`/api/v1/workspaces/${enc(ws)}`, { quiet: true }),
  async listImages(ws) {
    const images = [];
    let token = "";
    do {
      const q = new URLSearchParams({ limit: "200" });
      if (token) q.set("page_token", token);
      const { data } = await request(`/api/v1/workspaces/${enc(ws)}/images?${q}`);
      images.push(...data.images);
      token = data.next_page_token;
    } while (token);
    return images;
  },
  createImage: (ws, body) => request(`/api/v1/workspaces/${enc(ws)}/images`, { method: "POST", body }),
  getImage: (id, quiet) => request(`/api/v1/images/${enc(id)}`, { quiet }),
  patchImage: (id, etag, body) => request(`/api/v1/images/${enc(id)}`, { method: "PATCH", body, headers: { "If-Match": etag } }),
  deleteImage: (id) => request(`/api/v1/images/${enc(id)}`, { method: "DELETE" }),
  startBuild: (id) => request(`/api/v1/images/${enc(id)}/builds`, { method: "POST" }),
  listBuilds: (id, quiet) => request(`/api/v1/images/${enc(id)}/builds?limit=50`, { quiet }),
  getBuild: (id, n) => request(`/api/v1/images/${enc(id)}/builds/${n}`, { quiet: true }),
  diffBuild: (id, n, against = "current") => request(`/api/v1/images/${enc(id)}/builds/${n}/diff?against=${enc(against)}`, { quiet: true }),
  cancelBuild: (id, n) => request(`/api/v1/images/${enc(id)}/builds/${n}/cancel`, { method: "POST" }),
  steps: (id, n) => request(`/api/v1/images/${enc(id)}/builds/${n}/steps`, { quiet: true }),
  pushAgain: (id, n, reference) => request(`/api/v1/images/${enc(id)}/builds/${n}/pushes`, { method: "POST", body: { reference } }),
  log: (id, n, { offset = 0, follow = false, signal, quiet } = {}) => {
    const q = new URLSearchParams({ offset: String(offset) });
    if (follow) q.set("follow", "true");
    return request(`/api/v1/images/${enc(id)}/builds/${n}/log?${q}`, { raw: true, signal, quiet: quiet || follow, headers: { Accept: "text/plain" } });
  },
  getWebhook: (id) => request(`/api/v1/images/${enc(id)}/webhook`),
  newWebhook: (id) => request(`/api/v1/images/${enc(id)}/webhook`, { method: "POST" }),
  listCredentials: (ws) => request(`/api/v1/workspaces/${enc(ws)}/credentials`, { quiet: true }),
  putCredential: (ws, name, body) => request(`/api/v1/workspaces/${enc(ws)}/credentials/${enc(name)}`, { method: "PUT", body }),
  deleteCredential: (ws, name) => request(`/api/v1/workspaces/${enc(ws)}/credentials/${enc(name)}`, { method: "DELETE" }),
};
