// The tiles: one card per image of the workspace, and one to create a new image.
import { api } from "./api.js";
import { IMAGE_STATUS, clear, h, icon, isActive, when, withTooltip } from "./dom.js";
import { banner, confirmDialog, toast } from "./ui.js";

export function statusIcon(status, size = 22) {
  const s = IMAGE_STATUS[status] || IMAGE_STATUS.not_built;
  const el = h("span", { class: `status-icon status-${status}`, role: "img", "aria-label": s.label, tabindex: "0", "data-status": status },
    icon(s.icon, { size }));
  return withTooltip(el, s.tip);
}

export function ownerOnlyReason(ctx, what) {
  if (ctx.role !== "member") return "";
  return ctx.owner ? `Only the workspace's owner, ${ctx.owner}, can ${what}.` : `Only the workspace's owner can ${what}.`;
}

export function renderTiles(main, ctx) {
  ctx.setCrumbs([{ label: `Workspace ${ctx.workspace}` }, { label: "Resources" }, { label: "Docker Images" }]);
  const alert = h("div", { hidden: true });
  const list = h("ul", { class: "tiles", "aria-label": "Docker images", "aria-busy": "true" });
  const count = h("span", { class: "muted count" });
  main.append(
    h("div", { class: "page-head" },
      h("div", null,
        h("p", { class: "eyebrow" }, "Resources"),
        h("h1", { id: "page-title" }, "Docker Images"),
        h("p", { class: "muted lead" }, "Images your compute nodes run. Each is built from a Dockerfile or a Git repository and kept in the workspace's registry.")),
      count),
    alert,
    h("section", { "aria-labelledby": "page-title" }, list));

  let alive = true;
  let timer = null;
  let images = [];

  const newTile = () => h("li", { class: "tile tile-new" },
    h("a", { class: "tile-new-link", href: "#/images/new", "data-testid": "new-image" },
      h("span", { class: "tile-new-icon" }, icon("plus", { size: 26 })),
      h("span", { class: "tile-new-label" }, "New image"),
      h("span", { class: "muted small" }, "Define an image from a Dockerfile or a Git repository")));

  function tile(img) {
    const reason = ownerOnlyReason(ctx, "delete images");
    const del = h("button", {
      type: "button", class: "icon-btn tile-delete", "aria-label": `Delete image ${img.name}`,
      disabled: Boolean(reason), "data-action": "delete",
      onclick: () => remove(img, del),
    }, icon("trash", { size: 18 }));
    const building = isActive(img.latest_build);
    return h("li", { class: `tile status-${img.status}`, "data-image-id": img.id, "data-name": img.name, "data-status": img.status },
      h("div", { class: "tile-top" },
        statusIcon(img.status),
        building ? h("span", { class: "chip chip-running" }, icon("spinner", { size: 14, cls: "spin" }), img.latest_build.status === "queued" ? "Queued" : "Building") : null,
        h("span", { class: "spacer" }),
        withTooltip(del, reason || `Delete ${img.name}`)),
      h("a", { class: "tile-open", href: `#/images/${encodeURIComponent(img.id)}`, "aria-label": `${img.name}, ${IMAGE_STATUS[img.status]?.label || img.status}. Open the editor.` },
        h("span", { class: "tile-name" }, img.name)),
      h("p", { class: "tile-desc" }, img.description || h("span", { class: "muted" }, "No description")),
      h("p", { class: "tile-meta muted small" },
        h("span", { class: "tile-ctx" }, img.context?.type === "git" ? [icon("git", { size: 14 }), "Git repository"] : [icon("folder", { size: 14 }), "Local folder"]),
        img.history?.modified ? h("span", { class: "tile-when", title: `Last changed by ${img.history.modified.by}` }, `${img.history.modified.by} · ${when(img.history.modified.at)}`) : null));
  }

  function render() {
    clear(list);
    list.append(newTile(), ...images.map(tile));
    list.removeAttribute("aria-busy");
    count.textContent = images.length === 1 ? "1 image" : `${images.length} images`;
    if (!images.length) {
      list.append(h("li", { class: "tile tile-empty muted" }, "No images yet. Create the first one with New image."));
    }
  }

  async function load(quiet) {
    try {
      images = await api.listImages(ctx.workspace);
      if (!alive) return;
      banner(alert, "error", "");
      render();
    } catch (err) {
      if (!alive) return;
      list.removeAttribute("aria-busy");
      if (!quiet || !images.length) {
        banner(alert, "error", err.status === 404
          ? `Workspace ${ctx.workspace} does not exist, or you are not one of its members.`
          : `Could not load the images: ${err.message}`,
        h("button", { type: "button", class: "btn btn-small", onclick: () => load(false) }, "Try again"));
        if (!images.length) clear(list).append(newTile());
      }
    }
    schedule();
  }

  // While a build runs, keep the tiles current.
  function schedule() {
    clearTimeout(timer);
    if (alive && images.some((i) => isActive(i.latest_build))) timer = setTimeout(() => load(true), 3000);
  }

  async function remove(img, button) {
    const ok = await confirmDialog({
      title: `Delete ${img.name}?`,
      body: [h("p", null, "This deletes the image definition, all its builds and their logs. Compute nodes that use it can no longer start it."), h("p", null, "This cannot be undone.")],
      confirmLabel: "Delete image",
      danger: true,
    });
    if (!ok) return;
    const li = button.closest("li");
    li?.classList.add("is-removing");
    li?.setAttribute("aria-busy", "true");
    try {
      await api.deleteImage(img.id);
      images = images.filter((i) => i.id !== img.id);
      render();
      toast(`Deleted ${img.name}.`);
      list.querySelector(".tile-new-link")?.focus();
    } catch (err) {
      li?.classList.remove("is-removing");
      li?.removeAttribute("aria-busy");
      if (err.status === 403) {
        ctx.learnedNotOwner();
        render(); // the delete buttons now say why they are off
      }
      banner(alert, "error", `Could not delete ${img.name}: ${err.message}`);
    }
  }

  clear(list).append(newTile(), ...[1, 2, 3].map(() => h("li", { class: "tile tile-skeleton", "aria-hidden": "true" }, h("span"), h("span"), h("span"))));
  count.textContent = "Loading…";
  load(false);

  return {
    destroy() { alive = false; clearTimeout(timer); },
    canLeave: async () => true,
    dirty: () => false,
  };
}
