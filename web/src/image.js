// The image editor: definition, build context with the Dockerfile editor,
// destinations, status, history, credentials and the builds with their logs.
import { api } from "./api.js";
import { createBuildList } from "./builds.js";
import { createCredentials } from "./credentials.js";
import { BUILD_STATUS, IMAGE_STATUS, NAME_RE, append, clear, h, icon, isActive, plainMessage, timeEl } from "./dom.js";
import { createDockerfileEditor } from "./editor.js";
import { createRebuildPolicy } from "./rebuild.js";
import { ownerOnlyReason, statusIcon } from "./tiles.js";
import { banner, busyButton, confirmDialog, toast } from "./ui.js";

// TEMPLATE is a new image's Dockerfile: the server's (GET /api/v1/info),
// which builds offline from the shared base image in its registry; until
// the page has it, the same text with the page's host as the registry.
let TEMPLATE = `# Built when you press BUILD; every line is checked when you save.
FROM ${location.host}/library/busybox
RUN echo "hello from Slipway" > /hello
CMD ["cat", "/hello"]
`;

// setTemplate replaces the new-image template with the server's.
export function setTemplate(text) {
  if (typeof text === "string" && text) TEMPLATE = text;
}

// definition is the editable part of an image, in a canonical shape.
function definition(img) {
  const c = img.context || { type: "local", dockerfile: "" };
  const git = c.git || {};
  return {
    name: img.name || "",
    description: img.description || "",
    context: c.type === "git"
      ? { type: "git", git: compact({ url: git.url || "", ref: git.ref || "", dir: git.dir || "", credential: git.credential || "" }, ["url"]) }
      : { type: "local", dockerfile: c.dockerfile || "" },
    destinations: (img.destinations || []).map((d) => compact({ reference: d.reference || "", credential: d.credential || "" }, ["reference"])),
    build_args: sortedArgs(img.build_args || {}),
    secrets: [...(img.secrets || [])],
    target: img.target || "",
  };
}

// sortedArgs is build arguments in a stable key order, for comparison.
function sortedArgs(o) {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// The build inputs as the form shows them: NAME=value lines, names.
const argsText = (args) => Object.entries(args).map(([k, v]) => `${k}=${v}`).join("\n");
function parseArgs(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const i = line.indexOf("=");
    out[(i < 0 ? line : line.slice(0, i)).trim()] = i < 0 ? "" : line.slice(i + 1);
  }
  return sortedArgs(out);
}
const parseNames = (text) => text.split(/[\s,]+/).filter(Boolean);

// compact drops empty optional fields.
function compact(o, keep) {
  const out = {};
  for (const [k, v] of Object.entries(o)) if (v !== "" || keep.includes(k)) out[k] = v;
  return out;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const FIELD_LABELS = { name: "name", description: "description", context: "build context", destinations: "destinations", build_args: "build arguments", secrets: "secrets", target: "target stage" };
const FIELDS = Object.keys(FIELD_LABELS);

export function renderImage(main, ctx, id) {
  const isNew = id === "new";
  const st = {
    image: null, // the image as last read from the server
    etag: "",
    base: null, // the definition the user's edits are based on
    localDockerfile: TEMPLATE, // kept while the context is git, to switch back
    alive: true,
    pollTimer: null,
  };

  // ---- Header and actions ----
  const title = h("h1", { id: "page-title", class: "editor-title" }, isNew ? "New image" : "Loading…");
  const statusSlot = h("div", { class: "title-status" });
  const saveBtn = h("button", { type: "button", class: "btn btn-primary", "data-action": "save", disabled: true }, icon("save", { size: 18 }), h("span", null, "Save"));
  const buildBtn = h("button", { type: "button", class: "btn btn-accent", "data-action": "build", disabled: true, "aria-describedby": "build-reason" }, icon("build", { size: 18 }), h("span", null, "Build"));
  const deleteBtn = h("button", { type: "button", class: "btn btn-danger-outline", "data-action": "delete", hidden: isNew, "aria-describedby": "delete-reason" }, icon("trash", { size: 18 }), h("span", null, "Delete"));
  const buildReason = h("p", { id: "build-reason", class: "action-reason", "data-testid": "build-reason" });
  const deleteReason = h("span", { id: "delete-reason", class: "visually-hidden" });
  const dirtyNote = h("span", { class: "dirty-note", hidden: true, "aria-live": "polite" }, "Unsaved changes");
  const alertBox = h("div", { hidden: true, "data-testid": "editor-alert" });
  const conflictBox = h("div", { hidden: true, "data-testid": "conflict" });

  // ---- Definition ----
  const nameInput = h("input", { id: "f-name", name: "name", "data-field": "name", autocomplete: "off", spellcheck: "false", required: true, placeholder: "team/pytorch", "aria-describedby": "f-name-help f-name-error", maxlength: "200" });
  const nameError = h("p", { id: "f-name-error", class: "field-error", hidden: true });
  const descInput = h("textarea", { id: "f-desc", name: "description", "data-field": "description", rows: "3", maxlength: "4096", placeholder: "What the image is for", "aria-describedby": "f-desc-error" });
  const descError = h("p", { id: "f-desc-error", class: "field-error", hidden: true });

  // ---- Build context ----
  const ctxLocal = h("input", { type: "radio", name: "ctx-type", id: "ctx-local", value: "local", checked: true });
  const ctxGit = h("input", { type: "radio", name: "ctx-type", id: "ctx-git", value: "git" });
  const editorHost = h("div", { class: "code-editor", id: "dockerfile-editor", "data-field": "context.dockerfile" });
  const dockerfileError = h("p", { id: "dockerfile-error", class: "field-error", hidden: true, "data-testid": "dockerfile-error" });
  const localPane = h("div", { class: "ctx-pane", id: "ctx-local-pane" },
    h("div", { class: "label-row" }, h("span", { class: "label", id: "dockerfile-label" }, "Dockerfile"), h("span", { class: "muted small" }, "Tab indents · Esc then Tab leaves the editor")),
    editorHost, dockerfileError);
  const gitUrl = h("input", { id: "f-git-url", "data-field": "context.git.url", autocomplete: "off", spellcheck: "false", placeholder: "https://github.com/team/images.git", "aria-describedby": "f-git-url-error" });
  const gitRef = h("input", { id: "f-git-ref", "data-field": "context.git.ref", autocomplete: "off", spellcheck: "false", placeholder: "main" });
  const gitDir = h("input", { id: "f-git-dir", "data-field": "context.git.dir", autocomplete: "off", spellcheck: "false", placeholder: "docker/pytorch" });
  const gitCred = h("select", { id: "f-git-cred", "data-field": "context.git.credential" });
  const gitError = h("p", { id: "f-git-url-error", class: "field-error", hidden: true });
  const gitPane = h("div", { class: "ctx-pane", id: "ctx-git-pane", hidden: true },
    h("div", { class: "field" }, h("label", { for: "f-git-url" }, "Repository URL"), gitUrl, gitError),
    h("div", { class: "field-grid" },
      h("div", { class: "field" }, h("label", { for: "f-git-ref" }, "Ref ", h("span", { class: "muted" }, "(branch, tag or commit)")), gitRef, h("p", { class: "help" }, "Empty: the default branch.")),
      h("div", { class: "field" }, h("label", { for: "f-git-dir" }, "Directory with the Dockerfile"), gitDir, h("p", { class: "help" }, "Empty: the repository root."))),
    h("div", { class: "field" }, h("label", { for: "f-git-cred" }, "Git credential"), gitCred, h("p", { class: "help" }, "For a private repository: a git credential of this workspace.")));

  // ---- Destinations ----
  const destList = h("ul", { class: "dest-list", "aria-label": "Destinations" });
  const destError = h("p", { class: "field-error", hidden: true, id: "dest-error" });
  const addDest = h("button", { type: "button", class: "btn btn-small", "data-action": "add-destination" }, icon("plus", { size: 16 }), "Add destination");

  // ---- Changes since the last successful build ----
  const diffBody = h("div", { class: "diff-body", "data-testid": "diff" });
  const diffCard = h("section", { class: "card card-diff", "aria-labelledby": "diff-title", hidden: isNew },
    h("h2", { id: "diff-title" }, "Changes since the last successful build"), diffBody);

  // ---- Build options ----
  const argsInput = h("textarea", { id: "f-build-args", "data-field": "build_args", rows: "3", spellcheck: "false", placeholder: "PYTHON_VERSION=3.12", "aria-describedby": "f-build-args-help f-build-args-error" });
  const argsError = h("p", { id: "f-build-args-error", class: "field-error", hidden: true });
  const targetInput = h("input", { id: "f-target", "data-field": "target", autocomplete: "off", spellcheck: "false", placeholder: "the last stage", "aria-describedby": "f-target-error" });
  const targetError = h("p", { id: "f-target-error", class: "field-error", hidden: true });
  const secretsInput = h("input", { id: "f-secrets", "data-field": "secrets", autocomplete: "off", spellcheck: "false", placeholder: "hf-token", "aria-describedby": "f-secrets-help f-secrets-error" });
  const secretsError = h("p", { id: "f-secrets-error", class: "field-error", hidden: true });

  // ---- Side ----
  const statusCard = h("div", { class: "status-card", "data-testid": "status" });
  const historyList = h("dl", { class: "history" });
  const credSlot = h("section", { class: "card card-creds", "aria-labelledby": "cred-title" });
  const rebuildSlot = h("section", { class: "card card-rebuild", "aria-labelledby": "rebuild-title", hidden: isNew, "data-testid": "rebuild-policy" });
  const buildsSlot = h("section", { class: "card", "aria-labelledby": "builds-title" });

  main.append(
    h("div", { class: "editor-head" },
      h("a", { class: "back-link", href: "#/", "data-action": "back" }, icon("back", { size: 16 }), "Docker Images"),
      h("div", { class: "title-row" },
        h("div", { class: "title-main" }, title, statusSlot, dirtyNote),
        h("div", { class: "actions" }, deleteBtn, saveBtn, buildBtn)),
      buildReason, deleteReason),
    conflictBox,
    alertBox,
    h("div", { class: "editor-grid" },
      h("div", { class: "col-main" },
        h("section", { class: "card", "aria-labelledby": "def-title" },
          h("h2", { id: "def-title" }, "Definition"),
          h("div", { class: "field" }, h("label", { for: "f-name" }, "Name"), nameInput,
            h("p", { class: "help", id: "f-name-help" }, "Unique on the platform; lower case, like team/pytorch. It is the image's repository in the registry."), nameError),
          h("div", { class: "field" }, h("label", { for: "f-desc" }, "Description"), descInput, descError)),
        h("section", { class: "card", "aria-labelledby": "ctx-title" },
          h("h2", { id: "ctx-title" }, "Build context"),
          h("fieldset", { class: "segmented" },
            h("legend", { class: "visually-hidden" }, "Where the build's Dockerfile and files come from"),
            ctxLocal, h("label", { for: "ctx-local" }, icon("folder", { size: 18 }), "Local folder"),
            ctxGit, h("label", { for: "ctx-git" }, icon("git", { size: 18 }), "Git repository")),
          localPane, gitPane),
        diffCard,
        h("section", { class: "card", "aria-labelledby": "dest-title" },
          h("div", { class: "card-head" }, h("h2", { id: "dest-title" }, "Destinations"), addDest),
          h("p", { class: "muted small" }, "Every build is pushed to the workspace's registry and to each destination, with the named registry credential."),
          destList, destError),
        h("section", { class: "card", "aria-labelledby": "opts-title" },
          h("h2", { id: "opts-title" }, "Build options"),
          h("div", { class: "field" }, h("label", { for: "f-build-args" }, "Build arguments"), argsInput,
            h("p", { class: "help", id: "f-build-args-help" }, "One NAME=value per line, for the Dockerfile's ARGs. Plain values, shown to every member: not for secrets."), argsError),
          h("div", { class: "field-grid" },
            h("div", { class: "field" }, h("label", { for: "f-target" }, "Target stage"), targetInput, targetError),
            h("div", { class: "field" }, h("label", { for: "f-secrets" }, "Secrets"), secretsInput,
              h("p", { class: "help", id: "f-secrets-help" }, "Secret credentials, by name, for RUN --mount=type=secret,id=NAME (at /run/secrets/NAME). Only the owner changes them."), secretsError))),
        buildsSlot),
      h("aside", { class: "col-side", "aria-label": "Status and history" },
        h("section", { class: "card card-status", "aria-labelledby": "status-title" }, h("h2", { id: "status-title" }, "Status"), statusCard),
        h("section", { class: "card card-history", "aria-labelledby": "history-title" }, h("h2", { id: "history-title" }, "Change history"), historyList),
        rebuildSlot,
        credSlot)));

  ctx.setCrumbs([{ label: `Workspace ${ctx.workspace}` }, { label: "Resources" }, { label: "Docker Images", href: "#/" }, { label: isNew ? "New image" : "…" }]);

  const editor = createDockerfileEditor(editorHost, {
    doc: TEMPLATE, label: "Dockerfile", describedBy: "dockerfile-error", onChange: () => changed(),
  });

  // ---- Rebuild policy: saved on its own; the definition's edits stay ----
  const policy = isNew ? null : createRebuildPolicy(rebuildSlot, ctx, {
    onSaved: (data, etag) => { st.etag = etag || st.etag; showImage({ ...data }); },
  });

  // ---- Credentials (and the selects that name them) ----
  let credentials = [];
  const creds = createCredentials(credSlot, ctx, (list) => {
    credentials = list;
    fillCredSelect(gitCred, "git", gitCred.value);
    for (const sel of destList.querySelectorAll("select")) fillCredSelect(sel, "registry", sel.value);
  });

  function fillCredSelect(sel, kind, value) {
    clear(sel).append(h("option", { value: "" }, "None"));
    const names = credentials.filter((c) => c.kind === kind).map((c) => c.name);
    if (value && !names.includes(value)) names.unshift(value); // keep a name that is gone, so it shows
    for (const n of names) {
      const c = credentials.find((x) => x.name === n);
      sel.append(h("option", { value: n }, c ? (c.registry ? `${n} (${c.registry})` : n) : `${n} (missing)`));
    }
    sel.value = value || "";
  }

  function destRow(d = { reference: "", credential: "" }) {
    const n = destList.children.length;
    const ref = h("input", { "aria-label": `Destination ${n + 1} reference`, "data-field": `destinations[${n}].reference`, class: "dest-ref", value: d.reference, placeholder: "registry.example.com/team/pytorch:latest", autocomplete: "off", spellcheck: "false", oninput: changed });
    const cred = h("select", { "aria-label": `Destination ${n + 1} credential`, class: "dest-cred", onchange: changed });
    fillCredSelect(cred, "registry", d.credential);
    const li = h("li", { class: "dest-row" }, ref, cred,
      h("button", { type: "button", class: "icon-btn", "aria-label": `Remove destination ${n + 1}`, onclick: () => { li.remove(); renumber(); changed(); destList.querySelector("input")?.focus() || addDest.focus(); } }, icon("close", { size: 18 })));
    return li;
  }

  function renumber() {
    [...destList.children].forEach((li, i) => {
      li.querySelector("input").setAttribute("aria-label", `Destination ${i + 1} reference`);
      li.querySelector("input").dataset.field = `destinations[${i}].reference`;
      li.querySelector("select").setAttribute("aria-label", `Destination ${i + 1} credential`);
      li.querySelector("button").setAttribute("aria-label", `Remove destination ${i + 1}`);
    });
    if (!destList.children.length) destList.append(h("li", { class: "muted small dest-empty" }, "No destinations: builds go to the workspace's registry only."));
  }

  addDest.addEventListener("click", () => {
    destList.querySelector(".dest-empty")?.remove();
    const li = destRow();
    destList.append(li);
    li.querySelector("input").focus();
    changed();
  });

  // ---- Reading and writing the form ----
  function gather() {
    const type = ctxGit.checked ? "git" : "local";
    return {
      name: nameInput.value.trim(),
      description: descInput.value,
      context: type === "git"
        ? { type: "git", git: compact({ url: gitUrl.value.trim(), ref: gitRef.value.trim(), dir: gitDir.value.trim(), credential: gitCred.value }, ["url"]) }
        : { type: "local", dockerfile: editor.text },
      destinations: [...destList.querySelectorAll(".dest-row")].map((li) => compact({ reference: li.querySelector("input").value.trim(), credential: li.querySelector("select").value }, ["reference"])),
      build_args: parseArgs(argsInput.value),
      secrets: parseNames(secretsInput.value),
      target: targetInput.value.trim(),
    };
  }

  function fill(def, fields = FIELDS) {
    if (fields.includes("build_args")) argsInput.value = argsText(def.build_args);
    if (fields.includes("secrets")) secretsInput.value = def.secrets.join(", ");
    if (fields.includes("target")) targetInput.value = def.target;
    if (fields.includes("name")) nameInput.value = def.name;
    if (fields.includes("description")) descInput.value = def.description;
    if (fields.includes("context")) {
      if (def.context.type === "git") {
        ctxGit.checked = true;
        gitUrl.value = def.context.git.url || "";
        gitRef.value = def.context.git.ref || "";
        gitDir.value = def.context.git.dir || "";
        fillCredSelect(gitCred, "git", def.context.git.credential || "");
      } else {
        ctxLocal.checked = true;
        editor.text = def.context.dockerfile;
      }
      showContext();
    }
    if (fields.includes("destinations")) {
      clear(destList);
      def.destinations.forEach((d) => destList.append(destRow(d)));
      renumber();
    }
  }

  function showContext() {
    const git = ctxGit.checked;
    localPane.hidden = git;
    gitPane.hidden = !git;
    if (!git) editor.view.requestMeasure();
  }

  function onContextSwitch() {
    if (ctxGit.checked) {
      st.localDockerfile = editor.text;
    } else {
      editor.text = st.localDockerfile;
    }
    showContext();
    changed();
  }
  ctxLocal.addEventListener("change", onContextSwitch);
  ctxGit.addEventListener("change", onContextSwitch);

  const isDirty = () => isNew ? true : Boolean(st.base) && !same(gather(), st.base);

  function changed() {
    const dirty = !isNew && isDirty();
    dirtyNote.hidden = !dirty;
    saveBtn.disabled = !isNew && !dirty && !st.conflict;
    if (isNew) saveBtn.disabled = false;
    updateBuildState();
  }
  for (const el of [nameInput, descInput, gitUrl, gitRef, gitDir, argsInput, targetInput, secretsInput]) el.addEventListener("input", changed);
  if (ctx.role === "member") secretsInput.readOnly = true; // the owner's to change
  gitCred.addEventListener("change", changed);
  nameInput.addEventListener("input", () => {
    const v = nameInput.value.trim();
    if (v && !NAME_RE.test(v)) setFieldError("name", "Use lower-case letters and digits, separated by ., _, - or /, like team/pytorch.");
    else setFieldError("name", "");
  });

  // ---- Field errors ----
  const errorSlots = { name: [nameInput, nameError], description: [descInput, descError], "context.git": [gitUrl, gitError], destinations: [destList, destError], "context.dockerfile": [editorHost, dockerfileError], build_args: [argsInput, argsError], target: [targetInput, targetError], secrets: [secretsInput, secretsError] };
  function setFieldError(field, message) {
    const key = Object.keys(errorSlots).find((k) => field === k || field.startsWith(k + ".") || field.startsWith(k + "["));
    if (!key) return false;
    const [input, slot] = errorSlots[key];
    slot.textContent = message;
    slot.hidden = !message;
    if (input.tagName === "INPUT" || input.tagName === "TEXTAREA") {
      if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    }
    return true;
  }
  function clearErrors() {
    for (const k of Object.keys(errorSlots)) setFieldError(k, "");
    banner(alertBox, "error", "");
  }

  // ---- Showing the server's image ----
  function showImage(img) {
    st.image = img;
    title.textContent = img.name;
    document.title = `${img.name} · Docker Images · Slipway`;
    ctx.setCrumbs([{ label: `Workspace ${ctx.workspace}` }, { label: "Resources" }, { label: "Docker Images", href: "#/" }, { label: img.name }]);
    clear(statusSlot).append(statusIcon(img.status, 24), h("span", { class: `status-label status-${img.status}`, "data-testid": "status-label" }, IMAGE_STATUS[img.status]?.label || img.status));
    const s = IMAGE_STATUS[img.status] || IMAGE_STATUS.not_built;
    const lb = img.latest_build;
    append(clear(statusCard), [
      h("div", { class: `status-line status-${img.status}` }, icon(s.icon, { size: 28 }), h("div", null, h("strong", null, s.label), h("p", { class: "muted small" }, s.about))),
      lb ? h("p", { class: "small latest-build" }, `Latest build #${lb.number}: `, h("span", { class: `build-status-text bs-${lb.status}` }, BUILD_STATUS[lb.status]?.label || lb.status), lb.failure ? ` (${lb.failure.message})` : "") : null,
      img.reference ? h("div", { class: "ref" }, h("span", { class: "label" }, "Pull reference"), h("code", { class: "ref-code", tabindex: "0" }, img.reference)) : null]);
    const hist = img.history || {};
    const row = (label, stamp, none) => [h("dt", null, label), h("dd", null, stamp ? [h("span", { class: "who" }, stamp.by), " · ", timeEl(stamp.at)] : h("span", { class: "muted" }, none))];
    clear(historyList).append(...row("Created", hist.created), ...row("Modified", hist.modified), ...row("Built", hist.built, "Not built yet"));
    policy?.show(img, st.etag);
    updateBuildState();
    showDiff(img);
  }

  // showDiff shows the saved definition's changes since the last successful
  // build, as a unified diff.
  let diffSeq = 0;
  async function showDiff(img) {
    const seq = ++diffSeq;
    const n = img.history?.built?.build;
    if (!img.history?.built) {
      clear(diffBody).append(h("p", { class: "muted" }, "Not built yet: there is no successful build to compare with."));
      return;
    }
    if (!n) {
      clear(diffBody).append(h("p", { class: "muted" }, "The last successful build was made before builds kept their definitions."));
      return;
    }
    try {
      const { data } = await api.diffBuild(id, n);
      if (!st.alive || seq !== diffSeq) return;
      if (data.identical) {
        clear(diffBody).append(h("p", { class: "muted", "data-testid": "diff-none" }, `No changes: the saved definition is the one build #${n} built.`));
        return;
      }
      const lines = data.diff.replace(/\n$/, "").split("\n").map((l) => {
        const kind = l.startsWith("+++") || l.startsWith("---") ? "file" : l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : "ctx";
        return h("span", { class: `diff-line diff-${kind}` }, l + "\n");
      });
      clear(diffBody).append(
        h("p", { class: "muted small" }, `The saved definition against build #${n}'s (unsaved edits are not included).`),
        h("pre", { class: "diff", tabindex: "0", "aria-label": `Changes since build ${n}` }, ...lines));
    } catch (err) {
      if (!st.alive || seq !== diffSeq) return;
      clear(diffBody).append(h("p", { class: "field-error" }, `Could not load the changes: ${err.message}`));
    }
  }

  function updateBuildState() {
    const lb = st.image?.latest_build;
    let reason = "";
    if (isNew) reason = "Save the image before building it.";
    else if (!st.image) reason = "Loading…";
    else if (ownerOnlyReason(ctx, "build images")) reason = ownerOnlyReason(ctx, "build images");
    else if (isActive(lb)) reason = `Build #${lb.number} is ${lb.status === "queued" ? "queued" : "in progress"}.`;
    else if (isDirty()) reason = "Save your changes first: a build uses the saved definition.";
    buildBtn.disabled = Boolean(reason) || buildBtn.classList.contains("is-busy");
    buildReason.textContent = reason;
    buildReason.hidden = !reason;
    const delReason = ownerOnlyReason(ctx, "delete images");
    deleteBtn.disabled = Boolean(delReason) || !st.image;
    deleteReason.textContent = delReason;
    if (delReason) deleteBtn.title = delReason; else deleteBtn.removeAttribute("title");
  }

  // ---- Save ----
  async function save() {
    clearErrors();
    const def = gather();
    if (!def.name) {
      setFieldError("name", "Give the image a name.");
      nameInput.focus();
      return;
    }
    try {
      if (isNew) {
        const { data, etag } = await busyButton(saveBtn, "Saving…", () => api.createImage(ctx.workspace, def));
        st.base = definition(data); // not dirty: leave without asking
        toast(`Created ${data.name}.`);
        ctx.go(`/images/${encodeURIComponent(data.id)}`);
        void etag;
        return;
      }
      const { data, etag } = await busyButton(saveBtn, "Saving…", () => api.patchImage(st.image.id, st.etag, def));
      st.etag = etag || st.etag;
      policy?.etag(st.etag);
      st.base = definition(data);
      st.conflict = false;
      banner(conflictBox, "warning", "");
      editor.markLine(0);
      showImage(data);
      changed();
      toast(`Saved ${data.name}.`);
    } catch (err) {
      changed();
      saveFailed(err);
    }
  }

  function saveFailed(err) {
    if (err.status === 412) return conflict(err);
    if (err.code === "invalid_dockerfile" || err.field === "context.dockerfile") {
      const line = err.line || 0;
      const msg = plainMessage(err.message, "context.dockerfile");
      editor.markLine(line, msg);
      setFieldError("context.dockerfile", line ? `Line ${line}: ${msg}` : msg);
      banner(alertBox, "error", line ? `The Dockerfile was not accepted. Line ${line}: ${msg}` : `The Dockerfile was not accepted: ${msg}`,
        line ? h("button", { type: "button", class: "btn btn-small", onclick: () => editor.focusLine(line) }, `Go to line ${line}`) : null);
      return;
    }
    if (err.code === "name_taken") {
      setFieldError("name", err.message);
      nameInput.focus();
    } else if (err.field) {
      setFieldError(err.field, plainMessage(err.message, err.field));
    }
    if (err.status === 404 && !isNew) {
      banner(alertBox, "error", "This image no longer exists: someone deleted it. Your text is still here; copy what you need.");
      return;
    }
    if (err.status === 403) ctx.learnedNotOwner();
    banner(alertBox, "error", `Not saved: ${err.message}`);
  }

  // ---- 412: someone else saved first ----
  function conflict(err) {
    st.conflict = true;
    const reload = h("button", { type: "button", class: "btn btn-small btn-primary", "data-action": "reload" }, icon("refresh", { size: 16 }), "Reload latest version");
    reload.addEventListener("click", () => reloadKeepingEdits(reload));
    const said = plainMessage(err.message);
    banner(conflictBox, "warning",
      [h("strong", { class: "banner-title" }, "Someone else saved this image after you opened it."),
        h("p", null, `${said}${/[.!]$/.test(said) ? "" : "."}`),
        h("p", null, "Your edits are kept. Reload the latest version: fields you did not touch take its values, yours stay as you left them. Then save again.")],
      reload);
    reload.focus();
  }

  async function reloadKeepingEdits(button) {
    try {
      const { data, etag } = await busyButton(button, "Reloading…", () => api.getImage(st.image.id));
      const mine = gather();
      const oldBase = st.base;
      const theirs = definition(data);
      const adopted = [];
      const both = [];
      for (const f of FIELDS) {
        if (same(mine[f], oldBase[f])) {
          if (!same(theirs[f], oldBase[f])) adopted.push(f);
        } else if (!same(theirs[f], oldBase[f]) && !same(theirs[f], mine[f])) {
          both.push(f);
        }
      }
      // Fields you did not touch take the new version; yours stay as you left them.
      fill(theirs, adopted);
      st.etag = etag;
      st.base = theirs;
      st.conflict = false;
      showImage(data);
      changed();
      const by = data.history?.modified;
      const parts = [`Loaded the version saved by ${by?.by || "someone else"}${by?.at ? " at " + new Date(by.at).toLocaleTimeString() : ""}. Your edits are still here.`];
      if (adopted.length) parts.push(` Took their new ${adopted.map((f) => FIELD_LABELS[f]).join(", ")}.`);
      if (both.length) parts.push(` You both changed the ${both.map((f) => FIELD_LABELS[f]).join(", ")}: yours is kept and will replace theirs when you save.`);
      parts.push(" Save again when ready.");
      banner(conflictBox, "info", parts.join(""));
      saveBtn.focus();
    } catch (e) {
      banner(alertBox, "error", `Could not reload the image: ${e.message}`);
    }
  }

  // ---- Build ----
  async function build() {
    banner(alertBox, "error", "");
    try {
      const { data } = await busyButton(buildBtn, "Starting…", () => api.startBuild(st.image.id));
      toast(`Build #${data.number} queued.`);
      st.image = { ...st.image, latest_build: data };
      showImage(st.image);
      await builds.refresh();
      builds.expand(data.number);
      builds.reveal(data.number);
      poll();
    } catch (err) {
      if (err.status === 403) ctx.learnedNotOwner();
      banner(alertBox, "error", `Could not start a build: ${err.message}`);
      if (err.code === "build_active") refreshImage();
    }
    updateBuildState();
  }

  // ---- Delete ----
  async function remove() {
    const ok = await confirmDialog({
      title: `Delete ${st.image.name}?`,
      body: [h("p", null, "This deletes the image definition, all its builds and their logs. Compute nodes that use it can no longer start it."), h("p", null, "This cannot be undone.")],
      confirmLabel: "Delete image",
      danger: true,
    });
    if (!ok) return;
    try {
      await busyButton(deleteBtn, "Deleting…", () => api.deleteImage(st.image.id));
      st.base = null;
      st.deleted = true;
      toast(`Deleted ${st.image.name}.`);
      ctx.go("/");
    } catch (err) {
      if (err.status === 403) ctx.learnedNotOwner();
      banner(alertBox, "error", `Could not delete: ${err.message}`);
      updateBuildState();
    }
  }

  saveBtn.addEventListener("click", save);
  buildBtn.addEventListener("click", build);
  deleteBtn.addEventListener("click", remove);
  // Ctrl+S / Cmd+S saves.
  const onKey = (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") {
      e.preventDefault();
      if (!saveBtn.disabled) save();
    }
  };
  document.addEventListener("keydown", onKey);

  // ---- Builds ----
  const builds = isNew ? null : createBuildList(buildsSlot, ctx, id, {
    onChange: (list) => {
      // A build that finished changes the image's status: read it again.
      const newest = list[0];
      const lb = st.image?.latest_build;
      if (newest && lb && newest.number === lb.number && newest.status !== lb.status) refreshImage();
    },
  });
  if (isNew) {
    buildsSlot.append(h("h2", { id: "builds-title" }, "Builds"), h("p", { class: "muted" }, "Builds appear here once the image is saved."));
  }

  async function refreshImage() {
    try {
      const { data } = await api.getImage(id, true);
      if (!st.alive) return;
      showImage(data);
      poll();
    } catch {
      // The next poll or action reports problems.
    }
  }

  // While a build is active, follow the image's status.
  function poll() {
    clearTimeout(st.pollTimer);
    if (!st.alive || !isActive(st.image?.latest_build)) return;
    st.pollTimer = setTimeout(async () => {
      await refreshImage();
      builds?.refresh(true);
    }, 2000);
  }

  // ---- Load ----
  async function load() {
    if (isNew) {
      const def = { name: "", description: "", context: { type: "local", dockerfile: TEMPLATE }, destinations: [], build_args: {}, secrets: [], target: "" };
      fill(def);
      changed();
      statusCard.append(h("p", { class: "muted" }, "Not saved yet."));
      historyList.append(h("dd", { class: "muted" }, "Nothing yet: the image has not been saved."));
      nameInput.focus();
      return;
    }
    try {
      const { data, etag } = await api.getImage(id);
      if (!st.alive) return;
      st.etag = etag;
      st.base = definition(data);
      if (st.base.context.type === "local") st.localDockerfile = st.base.context.dockerfile;
      fill(st.base);
      showImage(data);
      changed();
      poll();
    } catch (err) {
      if (!st.alive) return;
      title.textContent = "Image not available";
      banner(alertBox, "error", err.status === 404 ? "This image does not exist, or you may not see it." : `Could not load the image: ${err.message}`,
        h("a", { class: "btn btn-small", href: "#/" }, "Back to Docker Images"));
      main.querySelector(".editor-grid").hidden = true;
    }
  }

  renumber();
  updateBuildState();
  load();

  return {
    destroy() {
      st.alive = false;
      clearTimeout(st.pollTimer);
      document.removeEventListener("keydown", onKey);
      builds?.destroy();
      creds.destroy();
      editor.destroy();
      document.title = "Docker Images · Slipway";
    },
    dirty: () => !st.deleted && (isNew ? editor.text !== TEMPLATE || Boolean(nameInput.value) : isDirty()),
    async canLeave() {
      if (st.deleted || !(isNew ? editor.text !== TEMPLATE || nameInput.value : isDirty())) return true;
      if (isNew && st.base) return true;
      return confirmDialog({
        title: "Leave without saving?",
        body: h("p", null, "Your changes to this image are not saved. If you leave now they are lost."),
        confirmLabel: "Discard changes",
        danger: true,
      });
    },
  };
}
