// The build log list: one row per build, newest first; a row expands to its
// steps (each Dockerfile instruction with its status and duration, the
// failed one opened with its exit code explained) and, one click away, its
// raw log, which follows a running build live and has a refresh button.
import { api } from "./api.js";
import { BUILD_STATUS, clear, clock, duration, h, icon, isActive, timeEl } from "./dom.js";
import { causeText, TRIGGERS } from "./rebuild.js";
import { busyButton } from "./ui.js";
import { pushList } from "./pushes.js";

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
      const pre = h("pre", { class: "log", tabindex: "0", role: "log", "aria-label": `Log of build ${b.number}`, "data-testid": "log", hidden: true });
      const stepsEl = h("ol", { class: "steps", "aria-label": `Steps of build ${b.number}`, "data-testid": "steps" });
      const stepsNote = h("p", { class: "muted small steps-note", hidden: true });
      const logStatus = h("span", { class: "log-status muted small", "aria-live": "polite" });
      const refresh = h("button", { type: "button", class: "btn btn-small", "data-action": "refresh-log" }, icon("refresh", { size: 16 }), "Refresh");
      const cancel = h("button", { type: "button", class: "btn btn-small btn-danger-outline", "data-action": "cancel-build", hidden: true }, "Cancel build");
      const stepsBtn = h("button", { type: "button", class: "seg", "data-action": "view-steps", "aria-pressed": "true", "aria-controls": `${logId}-steps` }, "Steps");
      const logBtn = h("button", { type: "button", class: "seg", "data-action": "view-log", "aria-pressed": "false", "aria-controls": `${logId}-raw` }, "Raw log");
      const failure = h("p", { class: "build-failure", hidden: true });
      stepsEl.id = `${logId}-steps`;
      pre.id = `${logId}-raw`;
      const pushes = h("div", { class: "build-pushes" });
      const panel = h("div", { class: "build-panel", id: logId, hidden: true },
        failure, pushes,
        h("div", { class: "log-toolbar" }, h("span", { class: "segmented", role: "group", "aria-label": "View" }, stepsBtn, logBtn), logStatus, h("span", { class: "spacer" }), cancel, refresh),
        stepsEl, stepsNote, pre);
      const li = h("li", { class: "build-row", "data-build": String(b.number) }, toggle, panel);
      r = { li, toggle, panel, pre, stepsEl, stepsNote, stepsBtn, logBtn, logStatus, refresh, cancel, failure, pushes, build: b, offset: 0, loaded: false, follow: null, expanded: false,
        view: "steps", stick: true, steps: null, stepsTimer: null, opened: new Map() };
      toggle.addEventListener("click", () => setExpanded(r, !r.expanded));
      refresh.addEventListener("click", () => busyButton(refresh, "Refreshing…", () => Promise.all([readMore(r), loadSteps(r)])));
      cancel.addEventListener("click", () => cancelBuild(r));
      stepsBtn.addEventListener("click", () => setView(r, "steps"));
      logBtn.addEventListener("click", () => setView(r, "log"));
      // The live log follows its newest line unless the reader scrolls up;
      // scrolling back to the bottom follows again.
      pre.addEventListener("scroll", () => { r.stick = atBottom(pre); });
      rows.set(b.number, r);
    }
    r.build = b;
    clear(r.toggle).append(
      h("span", { class: "chev" }, icon("chevron", { size: 18 })),
      h("span", { class: "build-num" }, `#${b.number}`,
        b.commit ? h("code", { class: "build-commit", title: `Commit ${b.commit}`, "data-testid": "build-commit" }, b.commit.slice(0, 12)) : null,
        b.unchanged ? h("span", { class: "build-unchanged muted small", title: "Same digest as the image already had: nothing changed" }, "no change") : null),
      h("span", { class: "build-start" }, b.started_at ? timeEl(b.started_at, true) : h("span", { class: "muted" }, `queued ${clock(b.queued_at)}`)),
      statusBadge(b),
      h("span", { class: `build-trigger trigger-${b.trigger}`, "data-testid": "build-trigger", title: causeText(b) }, TRIGGERS[b.trigger] || b.trigger),
      h("span", { class: "build-dur" }, b.duration_seconds != null ? duration(b.duration_seconds) : "–"));
    r.toggle.setAttribute("aria-label", `Build ${b.number}, ${BUILD_STATUS[b.status]?.label || b.status}${b.duration_seconds != null ? ", " + duration(b.duration_seconds) : ""}. ${r.expanded ? "Hide" : "Show"} its steps and log.`);
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
    r.pushes.replaceChildren(...[pushList(ctx, imageId, b, (updated) => row(updated))].filter(Boolean));
    return r.li;
  }

  const atBottom = (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 24;

  // showLogEnds scrolls the failed step's excerpt of the log to its end,
  // where the command's last words are.
  function showLogEnds(r) {
    for (const pre of r.stepsEl.querySelectorAll(".step-log")) pre.scrollTop = pre.scrollHeight;
  }

  function setView(r, view) {
    r.view = view;
    r.stepsBtn.setAttribute("aria-pressed", String(view === "steps"));
    r.logBtn.setAttribute("aria-pressed", String(view === "log"));
    r.stepsEl.hidden = view !== "steps";
    r.stepsNote.hidden = view !== "steps" || !r.stepsNote.textContent;
    r.pre.hidden = view !== "log";
    if (view === "log" && r.stick) r.pre.scrollTop = r.pre.scrollHeight;
    if (view === "steps") showLogEnds(r);
  }

  const STEP_ICON = {
    done: ["check", "Done"], cached: ["check", "Cached"], running: ["spinner", "Running"], failed: ["alert", "Failed"],
    pending: ["clock", "Waiting"], not_run: ["cancelled", "Not run"], skipped: ["cancelled", "Skipped"], cancelled: ["cancelled", "Cancelled"],
  };

  function stepDuration(s) {
    if (s.duration_seconds == null) return "";
    return s.duration_seconds < 1 && s.status !== "running" ? "< 1 s" : duration(s.duration_seconds);
  }

  // logTail is the raw log's last lines before Slipway's own notes: what a
  // failed command printed last.
  function logTail(r, n = 12) {
    const lines = r.pre.textContent.split("\n").filter((l) => l.trim() && !l.startsWith("[slipway]"));
    return lines.slice(-n).join("\n");
  }

  function renderSteps(r) {
    const data = r.steps;
    if (!data) return;
    const items = [];
    let stage = null;
    data.steps.forEach((s, i) => {
      if (s.kind === "instruction" && s.stage !== stage) {
        stage = s.stage;
        items.push(h("li", { class: "step-stage", "aria-hidden": "true" }, `Stage ${s.stage}${s.stage_name ? " · " + s.stage_name : ""}`));
      }
      const [ic, label] = STEP_ICON[s.status] || ["info", s.status];
      const failed = s.status === "failed";
      const open = r.opened.has(i) ? r.opened.get(i) : failed;
      const head = [
        h("span", { class: "step-icon" }, icon(ic, { size: 16, cls: s.status === "running" ? "spin" : "", label })),
        h("span", { class: "step-line" }, s.line != null ? `line ${s.line}` : ""),
        h("code", { class: "step-text", title: s.instruction }, s.instruction),
        h("span", { class: "step-state" }, label),
        h("span", { class: "step-dur" }, stepDuration(s)),
      ];
      const li = h("li", { class: `step st-${s.status}${open ? " is-open" : ""}`, "data-status": s.status, "data-step": String(i) });
      if (!failed) {
        li.append(h("div", { class: "step-head" }, ...head));
      } else {
        const detailId = `build-${r.build.number}-step-${i}`;
        const btn = h("button", { type: "button", class: "step-head step-toggle", "aria-expanded": String(open), "aria-controls": detailId }, ...head);
        const exit = s.exit_code != null
          ? h("p", { class: "step-exit" }, h("strong", null, `Exit code ${s.exit_code}`), `: ${s.explanation || ""}`)
          : h("p", { class: "step-exit" }, s.explanation || "The build failed here.");
        const tail = logTail(r);
        const detail = h("div", { class: "step-detail", id: detailId, hidden: !open },
          exit,
          s.error ? h("p", { class: "step-error small" }, s.error) : null,
          tail ? h("pre", { class: "log step-log", "aria-label": "The end of the log" }, tail) : null,
          h("button", { type: "button", class: "btn btn-small", "data-action": "open-log" }, "Show the whole log"));
        btn.addEventListener("click", () => {
          const now = detail.hidden;
          r.opened.set(i, now);
          detail.hidden = !now;
          btn.setAttribute("aria-expanded", String(now));
          li.classList.toggle("is-open", now);
          if (now) showLogEnds(r);
        });
        detail.querySelector('[data-action="open-log"]').addEventListener("click", () => { setView(r, "log"); r.logBtn.focus(); });
        li.append(btn, detail);
      }
      items.push(li);
    });
    clear(r.stepsEl).append(...items);
    showLogEnds(r);
    if (!data.steps.length) r.stepsEl.append(h("li", { class: "muted small step-empty" }, isActive(r.build) ? "No steps yet: the build is starting." : "This build's log names no steps."));
    r.stepsNote.textContent = data.lines ? "" : "The Dockerfile of this build is not known here (a Git context, or edited since): the steps are the ones its log names, without lines.";
    r.stepsNote.hidden = r.view !== "steps" || !r.stepsNote.textContent;
  }

  async function loadSteps(r) {
    try {
      const { data } = await api.steps(imageId, r.build.number);
      if (!alive) return;
      r.steps = data;
      renderSteps(r);
    } catch (err) {
      clear(r.stepsEl).append(h("li", { class: "field-error small" }, `Could not read the steps: ${err.message}`));
    }
  }

  // pollSteps keeps an active build's steps current while its row is open.
  function pollSteps(r) {
    clearTimeout(r.stepsTimer);
    loadSteps(r).finally(() => {
      if (alive && r.expanded && isActive(r.build)) r.stepsTimer = setTimeout(() => pollSteps(r), 1500);
    });
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
      clearTimeout(r.stepsTimer);
      return;
    }
    setView(r, r.view);
    if (isActive(r.build)) {
      startFollow(r);
      pollSteps(r);
    } else {
      (r.loaded ? Promise.resolve() : readMore(r)).then(() => loadSteps(r));
    }
  }

  function appendLog(r, text) {
    r.pre.append(text);
    if (r.stick) r.pre.scrollTop = r.pre.scrollHeight;
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
    if (alive) {
      await refresh(true);
      loadSteps(r);
    }
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
      // Rows stay where they are (a row taken out and put back loses its
      // log's scroll position): only new rows are inserted, gone ones removed.
      const want = builds.map(row);
      want.forEach((li, i) => {
        if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
      });
      while (list.children.length > want.length) list.lastElementChild.remove();
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
    // reveal scrolls build n's row into sight (after BUILD).
    reveal(n) {
      rows.get(n)?.li.scrollIntoView({ block: "start", behavior: "smooth" });
    },
    destroy() {
      alive = false;
      for (const r of rows.values()) { r.follow?.abort(); clearTimeout(r.stepsTimer); }
    },
  };
}
