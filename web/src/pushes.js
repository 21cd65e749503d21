// A build's destinations: each push with its status and error, and, on a
// failed one, "Push again" (owner only), which pushes the built image there
// once more without a rebuild.
import { api } from "./api.js";
import { h, icon, timeEl } from "./dom.js";
import { busyButton, toast } from "./ui.js";

const PUSH_STATUS = {
  pushed: { icon: "check", label: "Pushed" },
  failed: { icon: "alert", label: "Failed" },
  pushing: { icon: "spinner", label: "Pushing" },
};

// pushList renders build b's pushes (none: null); onUpdated gets the build
// record a push again answers with.
export function pushList(ctx, imageId, b, onUpdated) {
  if (!b.pushes || b.pushes.length === 0) return null;
  const list = h("ul", { class: "push-list", "aria-label": `Destinations of build ${b.number}` });
  b.pushes.forEach((p, i) => {
    const s = PUSH_STATUS[p.status] || { icon: "info", label: p.status };
    const error = p.error ? h("div", { class: "push-error", "data-testid": "push-error" }, p.error) : null;
    let again = null;
    if (i > 0 && p.status === "failed" && b.status === "succeeded") {
      const reason = ctx.role === "member" ? "Only the workspace's owner can push images." : "";
      const button = h("button", { type: "button", class: "btn btn-small", "data-action": "push-again", disabled: Boolean(reason), title: reason || null },
        icon("refresh", { size: 16 }), "Push again");
      const note = h("span", { class: "push-note muted small", role: "status" });
      button.addEventListener("click", async () => {
        try {
          const { data } = await busyButton(button, "Pushing…", () => api.pushAgain(imageId, b.number, p.reference));
          const now = data.pushes.find((q) => q.reference === p.reference);
          toast(now && now.status === "pushed" ? `Pushed to ${p.reference}.` : `The push to ${p.reference} failed again.`, now && now.status === "pushed" ? "success" : "error");
          onUpdated(data);
        } catch (err) {
          if (err.status === 403) ctx.learnedNotOwner();
          note.textContent = `Could not push: ${err.message}`;
        }
      });
      again = [button, note];
    }
    list.append(h("li", { class: `push push-${p.status}`, "data-reference": p.reference, "data-status": p.status },
      h("div", { class: "push-main" },
        h("span", { class: `build-status bs-${p.status === "pushed" ? "succeeded" : p.status === "failed" ? "failed" : "running"}` },
          icon(s.icon, { size: 16, cls: p.status === "pushing" ? "spin" : "" }), h("span", null, s.label)),
        h("code", { class: "push-ref", title: i === 0 ? "The internal registry" : null }, p.reference),
        p.at ? h("span", { class: "muted small" }, timeEl(p.at, true)) : null,
        again),
      error));
  });
  return list;
}
