// The workspace's credentials: names, kinds and hosts for everyone; the
// owner adds (PUT) and deletes them. Secrets are write-only, and each
// credential is sent only to its host (a registry's, or a git host).
import { api } from "./api.js";
import { CREDENTIAL_RE, clear, h, icon } from "./dom.js";
import { busyButton, confirmDialog, toast } from "./ui.js";

export function createCredentials(section, ctx, onList) {
  let alive = true;
  let list = [];
  const owner = ctx.role !== "member";
  const ul = h("ul", { class: "cred-list", "aria-label": "Workspace credentials" });
  const error = h("p", { class: "field-error", hidden: true, role: "alert", "data-testid": "cred-error" });

  const name = h("input", { id: "c-name", required: true, autocomplete: "off", spellcheck: "false", placeholder: "hub", pattern: "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?" });
  const kind = h("select", { id: "c-kind" }, h("option", { value: "registry" }, "Registry"), h("option", { value: "git" }, "Git"));
  const registry = h("input", { id: "c-registry", autocomplete: "off", spellcheck: "false", placeholder: "registry.example.com" });
  const username = h("input", { id: "c-user", autocomplete: "off", spellcheck: "false" });
  const secret = h("input", { id: "c-secret", type: "password", autocomplete: "new-password", required: true });
  const secretLabel = h("label", { for: "c-secret" }, "Password");
  const registryLabel = h("label", { for: "c-registry" }, "Registry host");
  const registryField = h("div", { class: "field" }, registryLabel, registry);
  const submit = h("button", { type: "submit", class: "btn btn-small btn-primary" }, icon("plus", { size: 16 }), "Store credential");
  const form = h("form", { class: "cred-form", "aria-label": "Add or replace a credential", hidden: true },
    h("div", { class: "field-grid" },
      h("div", { class: "field" }, h("label", { for: "c-name" }, "Name"), name),
      h("div", { class: "field" }, h("label", { for: "c-kind" }, "Kind"), kind)),
    registryField,
    h("div", { class: "field-grid" },
      h("div", { class: "field" }, h("label", { for: "c-user" }, "Username"), username),
      h("div", { class: "field" }, secretLabel, secret)),
    h("div", { class: "form-actions" },
      h("button", { type: "button", class: "btn btn-small", onclick: () => { form.hidden = true; addBtn.hidden = false; addBtn.focus(); } }, "Cancel"),
      submit));
  const addBtn = h("button", { type: "button", class: "btn btn-small", "data-action": "add-credential", hidden: !owner }, icon("key", { size: 16 }), "Add");

  section.append(
    h("div", { class: "card-head" }, h("h2", { id: "cred-title" }, "Workspace credentials"), addBtn),
    owner
      ? h("p", { class: "muted small" }, "Used for destinations (registry) and private repositories (git). Secrets are never shown again.")
      : h("p", { class: "muted small" }, ctx.owner ? `Only the workspace's owner, ${ctx.owner}, can add or delete credentials.` : "Only the workspace's owner can add or delete credentials."),
    ul, error, form);

  kind.addEventListener("change", () => {
    const git = kind.value === "git";
    registryLabel.textContent = git ? "Git host" : "Registry host";
    registry.placeholder = git ? "github.com" : "registry.example.com";
    secretLabel.textContent = git ? "Token" : "Password";
  });
  addBtn.addEventListener("click", () => { form.hidden = false; addBtn.hidden = true; name.focus(); });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const n = name.value.trim();
    if (!CREDENTIAL_RE.test(n)) {
      error.hidden = false;
      error.textContent = "A credential's name is lower-case letters, digits and '-', at most 63, like docker-hub.";
      name.focus();
      return;
    }
    const body = kind.value === "git"
      ? { kind: "git", host: registry.value.trim(), username: username.value, token: secret.value }
      : { kind: "registry", registry: registry.value.trim(), username: username.value, password: secret.value };
    try {
      await busyButton(submit, "Storing…", () => api.putCredential(ctx.workspace, n, body));
      secret.value = "";
      form.reset();
      kind.dispatchEvent(new Event("change"));
      form.hidden = true;
      addBtn.hidden = false;
      toast(`Stored credential ${n}.`);
      await load();
      addBtn.focus();
    } catch (err) {
      if (err.status === 403) ctx.learnedNotOwner();
      error.hidden = false;
      error.textContent = `Not stored: ${err.message}`;
    }
  });

  async function remove(c, button) {
    const ok = await confirmDialog({
      title: `Delete credential ${c.name}?`,
      body: h("p", null, "Destinations and Git contexts that name it will fail to push or fetch until it is stored again."),
      confirmLabel: "Delete credential",
      danger: true,
    });
    if (!ok) return;
    try {
      await busyButton(button, "", () => api.deleteCredential(ctx.workspace, c.name));
      toast(`Deleted credential ${c.name}.`);
      await load();
      addBtn.focus();
    } catch (err) {
      if (err.status === 403) ctx.learnedNotOwner();
      error.hidden = false;
      error.textContent = `Not deleted: ${err.message}`;
    }
  }

  function render() {
    clear(ul);
    if (!list.length) ul.append(h("li", { class: "muted small" }, "No credentials."));
    for (const c of list) {
      const del = owner ? h("button", { type: "button", class: "icon-btn", "aria-label": `Delete credential ${c.name}` }, icon("trash", { size: 16 })) : null;
      del?.addEventListener("click", () => remove(c, del));
      ul.append(h("li", { class: "cred" },
        icon("key", { size: 16, cls: "cred-icon" }),
        h("div", { class: "cred-main" },
          h("div", { class: "cred-title" }, h("span", { class: "cred-name" }, c.name), h("span", { class: `chip chip-${c.kind}` }, c.kind)),
          c.registry || c.host ? h("div", { class: "muted small cred-reg", title: c.registry || c.host }, c.registry || c.host) : null),
        del));
    }
  }

  async function load() {
    try {
      const { data } = await api.listCredentials(ctx.workspace);
      if (!alive) return;
      list = data.credentials || [];
      render();
      onList(list);
    } catch (err) {
      if (!alive) return;
      error.hidden = false;
      error.textContent = `Could not load the credentials: ${err.message}`;
    }
  }

  load();
  return { destroy() { alive = false; }, reload: load };
}
