// The build log list: one row per build, newest first; a row expands to its
// log, which follows a running build live and has a refresh button.
import { api } from "./api.js";
import { BUILD_STATUS, clear, clock, duration, h, icon, isActive, timeEl } from "./dom.js";
import { causeText, TRIGGERS } from "./rebuild.js";
import { busyButton } from "./ui.js";

export function createBuildList(section, ctx, imageId, { onChange } = {}) {
  const list = h("ul", { class: "build-list", "aria-label": "Builds, newest first" });
  const empty = h("p", { class: "muted", hidden: true }, "No builds yet. Press Build to start the first one.");
  const error = h("p", { class: "field-error", hidden: true, role: "alert" });
  const refreshBtn = h("button", { type: "button", class: "icon-btn", "aria-label": "Refresh the build list", "data-action": "refresh-builds" }, icon("refresh", { size: 18 }));
  const head = h("div", { class: "build-list-head", "aria-hidden": "true", hidden: true }, h("span"), h("span", null, "Build"), h("span", null, "Started"), h("span", null, "Status"), h("span", null, "Trigger"), h("span", null, "Duration"));
  section.append(
    h("div", { class: "card-head" }, h("h2", { id: "builds-title" }, "Build log"), refreshBtn),
    head, list, empty, error);

  let alive = true;
  let builds = [];
  const rows = new Map(); // number -> row state

  function statusBadge(b) {
    const s = BUILD_STATUS[b.status] || { icon: "info", label: b.status };
    return h("span", { class: `build-status bs-${b.status}`, "data-status": b.status },
      icon(s.icon, { size: 18, cls: b.status === "running" ? "spin" : "" }), h("span", null, s.label));
  }

  function row(b) {
    let r = rows.get(b.number);
    if (!r) {
      const logId = `build-log-${b.number}`;
      const toggle = h("button", { type: "button", class: "build-toggle", "aria-expanded": "false", "aria-controls": logId, "data-build": String(b.number) });
      const pre = h("pre", { class: "log", tabindex: "0", role: "log", "aria-label": `Log of build ${b.number}`, "data-testid": "log" });
      const logStatus = h("span", { class: "log-status muted small", "aria-live": "polite" });
      const refresh = h("button", { type: "button", class: "btn btn-small", "data-action": "refresh-log" }, icon("refresh", { size: 16 }), "Refresh");
      const cancel = h("button", { type: "button", class: "btn btn-small btn-danger-outline", "data-action": "cancel-build", hidden: true }, "Cancel build");
      const failure = h("p", { class: "build-failure", hidden: true });
      const panel = h("div", { class: "build-panel", id: logId, hidden: true },
        failure,
        h("div", { class: "log-toolbar" }, logStatus, h("span", { class: "spacer" }), cancel, refresh),
        pre);
      const li = h("li", { class: "build-row", "data-build": String(b.number) }, toggle, panel);
      r = { li, toggle, panel, pre, logStatus, refresh, cancel, failure, build: b, offset: 0, loaded: false, follow: null, expanded: false };
      toggle.addEventListener("click", () => setExpanded(r, !r.expanded));
      refresh.addEventListener("click", () => busyButton(refresh, "Refreshing…", () => readMore(r)));
      cancel.addEventListener("click", () => cancelBuild(r));
      rows.set(b.number, r);
    }
    r.build = b;
    clear(r.toggle).append(
      h("span", { class: "chev" }, icon("chevron", { size: 18 })),
      h("span", { class: "build-num" }, `#${b.number}`),
      h("span", { class: "build-start" }, b.started_at ? timeEl(b.started_at, true) : h("span", { class: "muted" }, `queued ${clock(b.queued_at)}`)),
      statusBadge(b),
      h("span", { class: `build-trigger trigger-${b.trigger}`, "data-testid": "build-trigger", title: causeText(b) }, TRIGGERS[b.trigger] || b.trigger),
      h("span", { class: "build-dur" }, b.duration_seconds != null ? duration(b.duration_seconds) : "–"));
    r.toggle.setAttribute("aria-label", `Build ${b.number}, ${BUILD_STATUS[b.status]?.label || b.status}${b.duration_seconds != null ? ", " + duration(b.duration_seconds) : ""}. ${r.expanded ? "Hide" : "Show"} its log.`);
    const reason = ctx.role === "member" ? "Only the workspace's owner can cancel builds." : "";
    r.cancel.hidden = !isActive(b);
    r.cancel.disabled = Boolean(reason);
    r.cancel.title = reason;
    if (b.failure) {
      r.failure.hidden = false;
      r.failure.textContent = `${b.status === "cancelled" ? "Cancelled" : "Failed"} (${b.failure.reason}): ${b.failure.message}`;
    } else {
      r.failure.hidden = true;
    }
    return r.li;
  }

  function setExpanded(r, on) {
    r.expanded = on;
    r.toggle.setAttribute("aria-expanded", String(on));
    r.panel.hidden = !on;
    r.li.classList.toggle("is-open", on);
    row(r.build); // relabel
    if (!on) {
      r.follow?.abort();
      r.follow = null;
      return;
    }
    if (isActive(r.build)) startFollow(r);
    else if (!r.loaded) readMore(r);
  }

  function appendLog(r, text) {
    const pre = r.pre;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.append(text);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  // readMore fetches the log from the last offset (the refresh button).
  async function readMore(r) {
    try {
      const res = await api.log(imageId, r.build.number, { offset: r.offset });
      const text = await res.text();
      const next = Number(res.headers.get("X-Next-Offset"));
      r.offset = Number.isFinite(next) && res.headers.has("X-Next-Offset") ? next : r.offset + new TextEncoder().encode(text).length;
      if (!r.loaded && !text) r.pre.textContent = "";
      r.loaded = true;
      if (text) appendLog(r, text);
      r.logStatus.textContent = `${text ? "Updated" : "No new lines"} · ${clock(new Date())}`;
      if (!r.pre.textContent) r.pre.dataset.empty = "true"; else delete r.pre.dataset.empty;
      const status = res.headers.get("X-Build-Status");
      if (status && status !== r.build.status) refresh(true);
    } catch (err) {
      r.logStatus.textContent = `Could not read the log: ${err.message}`;
    }
  }

  // startFollow streams the log of an active build with fetch and a ReadableStream.
  async function startFollow(r) {
    if (r.follow) return;
    const ctrl = new AbortController();
    r.follow = ctrl;
    r.loaded = true;
    r.logStatus.textContent = "Following the live log…";
    r.li.classList.add("is-live");
    r.refresh.disabled = true; // the stream delivers everything while it lasts
    try {
      const res = await api.log(imageId, r.build.number, { offset: r.offset, follow: true, signal: ctrl.signal });
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        r.offset += value.byteLength;
        const text = decoder.decode(value, { stream: true });
        if (text) { appendLog(r, text); delete r.pre.dataset.empty; }
      }
      const tail = decoder.decode();
      if (tail) appendLog(r, tail);
      r.logStatus.textContent = "The build has ended.";
    } catch (err) {
      if (err.name === "AbortError") return;
      r.logStatus.textContent = `The live log stopped: ${err.message}. Use Refresh to read the rest.`;
    } finally {
      if (r.follow === ctrl) r.follow = null;
      r.li.classList.remove("is-live");
      r.refresh.disabled = false;
    }
    if (alive) refresh(true);
  }

  async function cancelBuild(r) {
    try {
      await busyButton(r.cancel, "Cancelling…", () => api.cancelBuild(imageId, r.build.number));
      await refresh(true);
    } catch (err) {
      if (err.status === 403) ctx.learnedNotOwner();
      r.logStatus.textContent = `Could not cancel: ${err.message}`;
    }
  }

  async function refresh(quiet = false) {
    try {
      const { data } = await api.listBuilds(imageId, quiet);
      if (!alive) return;
      builds = data.builds;
      error.hidden = true;
      const keep = new Set(builds.map((b) => b.number));
      for (const [n, r] of rows) if (!keep.has(n)) { r.follow?.abort(); rows.delete(n); }
      const focused = document.activeElement;
      clear(list).append(...builds.map(row));
      if (focused && focused.isConnected && list.contains(focused)) focused.focus();
      empty.hidden = builds.length > 0;
      head.hidden = builds.length === 0;
      // A followed build that ended: read any tail and stop following.
      for (const r of rows.values()) {
        if (r.expanded && isActive(r.build) && !r.follow) startFollow(r);
      }
      onChange?.(builds);
    } catch (err) {
      if (!alive) return;
      error.hidden = false;
      error.textContent = `Could not load the builds: ${err.message}`;
    }
  }

  refreshBtn.addEventListener("click", () => refresh());
  refresh();

  return {
    refresh,
    expand(n) {
      const r = rows.get(n);
      if (r && !r.expanded) setExpanded(r, true);
    },
    destroy() {
      alive = false;
      for (const r of rows.values()) r.follow?.abort();
    },
  };
}
