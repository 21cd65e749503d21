// Slipway's web page: the Docker Images section of a workspace's RESOURCES
// tab. Routes (in the fragment): #/ the tiles, #/images/new, #/images/ID.
import "./style.css";
import { api, onBusy, onUnauthorized, session, takeFragment } from "./api.js";
import { clear, h, icon } from "./dom.js";
import { renderImage, setTemplate } from "./image.js";
import { renderTiles } from "./tiles.js";

const main = document.getElementById("main");
let current = null; // the mounted view: {destroy(), canLeave()}
let lastPath = null;

// The workspace and the caller's role in it, loaded once per workspace.
const ctx = {
  workspace: "",
  subject: "",
  role: "unknown", // owner | member | unknown (GET /api/v1/workspaces/{ws} missing or failed)
  owner: "",
  go: (path) => { location.hash = `#${path}`; },
  setCrumbs,
};

function setCrumbs(items) {
  const ol = clear(document.getElementById("crumbs"));
  items.forEach((item, i) => {
    const last = i === items.length - 1;
    ol.append(h("li", null, last || !item.href
      ? h("span", { "aria-current": last ? "page" : null }, item.label)
      : h("a", { href: item.href }, item.label)));
  });
}

function renderUser() {
  const el = clear(document.getElementById("user"));
  if (!session.token) return;
  el.append(icon("user", { size: 18 }), h("span", { class: "user-name" }, session.subject || "signed in"));
  if (ctx.role !== "unknown") el.append(h("span", { class: `role role-${ctx.role}` }, ctx.role));
}

// loadTemplate asks the server for the new-image template once.
let templateLoaded = false;
async function loadTemplate() {
  if (templateLoaded) return;
  try {
    const { data } = await api.info();
    setTemplate(data && data.new_image_dockerfile);
    templateLoaded = true;
  } catch {
    // Offline or an older server: the page's own template stays.
  }
}

async function loadRole() {
  ctx.role = "unknown";
  ctx.owner = "";
  try {
    const { data } = await api.workspace(ctx.workspace);
    if (data && (data.role === "owner" || data.role === "member")) {
      ctx.role = data.role;
      ctx.owner = data.owner || "";
    }
  } catch {
    // 404 (no such endpoint yet, or a workspace we may not see) or offline:
    // the role stays unknown and the API decides when the user acts.
  }
}

// learnedNotOwner is called when the API refused an owner-only action.
ctx.learnedNotOwner = () => {
  if (ctx.role === "unknown") {
    ctx.role = "member";
    renderUser();
  }
};

function signedOut(reason) {
  setCrumbs([{ label: "Docker Images" }]);
  clear(main).append(h("section", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Slipway"),
    reason ? h("p", { class: "banner banner-warning", role: "alert" }, reason) : null,
    h("p", null, "Open the link that ", h("code", null, "slipway serve"), " printed when it started. It signs you in for this browser tab."),
    h("p", null, "Or make a token with ", h("code", null, "bin/slipway token USER"), " and open:"),
    h("pre", { class: "code-block" }, `${location.origin}/#token=TOKEN&workspace=WORKSPACE`)));
}

function pickWorkspace() {
  setCrumbs([{ label: "Docker Images" }]);
  const input = h("input", { id: "ws-input", name: "workspace", required: true, autocomplete: "off", spellcheck: "false" });
  clear(main).append(h("section", { class: "card signin", "aria-labelledby": "ws-title" },
    h("h1", { id: "ws-title" }, "Choose a workspace"),
    h("form", { class: "form-row", onsubmit: (e) => { e.preventDefault(); session.setWorkspace(input.value.trim()); route(true); } },
      h("label", { for: "ws-input" }, "Workspace ID"), input,
      h("button", { class: "btn btn-primary", type: "submit" }, "Open"))));
  input.focus();
}

async function route(force = false) {
  const path = location.hash.replace(/^#/, "") || "/";
  if (path === lastPath && !force) return;
  if (current && !force && !(await current.canLeave())) {
    // Stay: put the address back without triggering another route.
    history.replaceState(history.state, "", `#${lastPath}`);
    return;
  }
  lastPath = path;
  current?.destroy();
  current = null;
  if (!session.token) return signedOut();
  if (!session.workspace) return pickWorkspace();
  if (ctx.workspace !== session.workspace) {
    ctx.workspace = session.workspace;
    ctx.subject = session.subject;
    await loadRole();
  }
  await loadTemplate();
  renderUser();
  clear(main);
  const m = path.match(/^\/images\/([^/]+)$/);
  current = m ? renderImage(main, ctx, decodeURIComponent(m[1])) : renderTiles(main, ctx);
  // Move focus to the new view for keyboard and screen-reader users.
  const heading = main.querySelector("h1");
  if (heading && document.activeElement === document.body) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

function boot() {
  takeFragment();
  const bar = document.getElementById("progress");
  let timer = null;
  onBusy((isBusy) => {
    clearTimeout(timer);
    if (isBusy) timer = setTimeout(() => { bar.hidden = false; main.setAttribute("aria-busy", "true"); }, 120);
    else { bar.hidden = true; main.removeAttribute("aria-busy"); }
  });
  onUnauthorized(() => {
    session.signOut();
    current?.destroy();
    current = null;
    lastPath = null;
    renderUser();
    signedOut("Your session has ended or the token was not accepted. Sign in again.");
  });
  // The skip link focuses the content without touching the fragment, which holds the route.
  document.querySelector(".skip-link")?.addEventListener("click", (e) => {
    e.preventDefault();
    main.focus();
  });
  window.addEventListener("hashchange", () => route());
  window.addEventListener("beforeunload", (e) => {
    if (current && current.dirty && current.dirty()) {
      e.preventDefault();
      e.returnValue = "";
    }
  });
  route(true);
}

boot();
