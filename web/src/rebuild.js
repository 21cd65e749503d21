// The rebuild policy card: when Slipway builds the image by itself (a
// schedule, base image updates, git commits), what its last check saw, and
// the git push webhook. Members see it; only the owner changes it.
import { api } from "./api.js";
import { clear, h, plainMessage, timeEl } from "./dom.js";
import { ownerOnlyReason } from "./tiles.js";
import { banner, busyButton, toast } from "./ui.js";

// TRIGGERS names a build's trigger for people.
export const TRIGGERS = { manual: "manual", schedule: "schedule", base_image: "base image", git: "git commit", event: "platform event" };

// causeText says in a sentence why an automatic build ran.
export function causeText(b) {
  const c = b.cause;
  if (!c) return b.trigger === "manual" ? `Started by ${b.requested_by}` : "";
  switch (b.trigger) {
    case "schedule":
      return `Scheduled for ${new Date(c.slot).toLocaleString()}${c.missed_slots ? ` (caught up ${c.missed_slots} missed)` : ""}`;
    case "base_image":
      return (c.bases || []).map((x) => `${x.ref} moved from ${x.old.slice(0, 19)} to ${x.new.slice(0, 19)}`).join("; ");
    case "git":
      return `New commit ${(c.commit || "").slice(0, 12)} (was ${(c.previous_commit || "none").slice(0, 12)}), seen by ${c.via}`;
    case "event":
      return `Requested by ${c.event?.source || "the platform"}${c.reason ? `: ${c.reason}` : ""}`;
  }
  return "";
}

export function createRebuildPolicy(section, ctx, { onSaved }) {
  const cron = h("input", { id: "rb-cron", "data-field": "rebuild.schedule.cron", autocomplete: "off", spellcheck: "false", placeholder: "0 3 * * 1", "aria-describedby": "rb-cron-help rb-error" });
  const tz = h("input", { id: "rb-tz", "data-field": "rebuild.schedule.timezone", autocomplete: "off", spellcheck: "false", placeholder: "UTC" });
  const base = h("input", { type: "checkbox", id: "rb-base" });
  const git = h("input", { type: "checkbox", id: "rb-git", "aria-describedby": "rb-git-help" });
  const gitHelp = h("p", { class: "help", id: "rb-git-help" });
  const saveBtn = h("button", { type: "button", class: "btn btn-small btn-primary", "data-action": "save-policy" }, "Save policy");
  const reason = h("p", { class: "action-reason", "data-testid": "policy-reason", hidden: true });
  const error = h("div", { id: "rb-error", hidden: true, "data-testid": "policy-error" });
  const state = h("p", { class: "muted small", "data-testid": "policy-state" });
  const hookBtn = h("button", { type: "button", class: "btn btn-small", "data-action": "webhook" }, "Show webhook");
  const hookBox = h("div", { class: "webhook", hidden: true, "data-testid": "webhook" });
  section.append(
    h("h2", { id: "rebuild-title" }, "Rebuild policy"),
    h("div", { class: "field" }, h("label", { for: "rb-cron" }, "Schedule ", h("span", { class: "muted" }, "(cron)")), cron,
      h("p", { class: "help", id: "rb-cron-help" }, "Five fields or @daily, @weekly…; empty: no schedule. Scheduled builds skip the layer cache.")),
    h("div", { class: "field" }, h("label", { for: "rb-tz" }, "Time zone"), tz),
    h("div", { class: "check" }, base, h("label", { for: "rb-base" }, "Rebuild when a base image is updated")),
    h("div", { class: "check" }, git, h("label", { for: "rb-git" }, "Rebuild on new git commits")), gitHelp,
    error, reason,
    h("div", { class: "actions" }, saveBtn, hookBtn), hookBox, state);

  let img = null;
  let etag = "";

  function read(p) {
    cron.value = p.schedule?.cron || "";
    tz.value = p.schedule?.timezone || "";
    base.checked = Boolean(p.on_base_image_update);
    git.checked = Boolean(p.on_git_commit);
  }

  function gather() {
    const c = cron.value.trim();
    return { schedule: c ? { cron: c, timezone: tz.value.trim() } : null, on_base_image_update: base.checked, on_git_commit: git.checked };
  }

  function show(image, tag) {
    const fresh = !img || img.id !== image.id || JSON.stringify(img.rebuild) !== JSON.stringify(image.rebuild);
    img = image;
    etag = tag || etag;
    if (fresh) read(image.rebuild || {});
    const isGit = image.context?.type === "git";
    const owner = ownerOnlyReason(ctx, "change the rebuild policy");
    for (const el of [cron, tz, base, saveBtn]) el.disabled = Boolean(owner);
    git.disabled = Boolean(owner) || (!isGit && !git.checked);
    gitHelp.textContent = isGit ? "Polled and by the push webhook." : "Only for images built from a git repository.";
    hookBtn.hidden = Boolean(owner) || !isGit;
    reason.textContent = owner;
    reason.hidden = !owner;
    const p = image.rebuild || {};
    const parts = [];
    if (p.set_by) parts.push(h("span", null, `Set by ${p.set_by.by} `, timeEl(p.set_by.at), ". "));
    if (p.checked_at) parts.push(h("span", null, "Checked ", timeEl(p.checked_at), p.up_to_date ? ": up to date. " : ": a change was found. "));
    if (p.pending) parts.push(h("span", null, "A rebuild waits for the active build. "));
    clear(state).append(...parts);
  }

  async function save() {
    banner(error, "error", "");
    try {
      const { data, etag: tag } = await busyButton(saveBtn, "Saving…", () => api.patchImage(img.id, etag, { rebuild: gather() }));
      img = null;
      show(data, tag);
      onSaved(data, tag);
      toast("Saved the rebuild policy.");
    } catch (err) {
      if (err.status === 403) ctx.learnedNotOwner();
      banner(error, "error", `Not saved: ${plainMessage(err.message, err.field)}`);
    }
  }

  async function webhook() {
    try {
      let res;
      try {
        res = await api.getWebhook(img.id);
      } catch (err) {
        if (err.status !== 404) throw err;
        res = await api.newWebhook(img.id);
      }
      clear(hookBox).append(
        h("p", { class: "small" }, "Add a push webhook to the repository with this URL and secret (content type application/json):"),
        h("code", { class: "ref-code", "data-testid": "webhook-url" }, res.data.url),
        h("code", { class: "ref-code", "data-testid": "webhook-secret" }, res.data.secret));
      hookBox.hidden = false;
    } catch (err) {
      banner(error, "error", `Could not show the webhook: ${err.message}`);
    }
  }

  saveBtn.addEventListener("click", save);
  hookBtn.addEventListener("click", webhook);
  return { show, etag: (tag) => { etag = tag; } };
}
