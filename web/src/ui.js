// Shared pieces of the page: the confirm dialog, toasts, banners and busy buttons.
import { append, clear, h, icon } from "./dom.js";

let dialogSeq = 0;

// confirmDialog asks a question in a modal dialog and resolves to true when
// the user confirms. Focus starts on the safe choice (Cancel) and returns to
// the element that had it; Escape cancels.
export function confirmDialog({ title, body, confirmLabel = "OK", danger = false }) {
  const id = ++dialogSeq;
  const returnTo = document.activeElement;
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", class: "btn", value: "cancel", "data-action": "cancel" }, "Cancel");
    const ok = h("button", { type: "button", class: `btn ${danger ? "btn-danger" : "btn-primary"}`, value: "ok", "data-action": "confirm" }, confirmLabel);
    const dlg = h("dialog", { class: "dialog", role: "alertdialog", "aria-modal": "true", "aria-labelledby": `dlg-title-${id}`, "aria-describedby": `dlg-body-${id}` },
      h("div", { class: "dialog-head" },
        danger ? icon("warn", { cls: "dialog-icon danger", size: 22 }) : icon("info", { cls: "dialog-icon", size: 22 }),
        h("h2", { id: `dlg-title-${id}` }, title)),
      h("div", { class: "dialog-body", id: `dlg-body-${id}` }, body),
      h("div", { class: "dialog-actions" }, cancel, ok));
    let answered = false;
    const finish = (answer) => {
      if (answered) return;
      answered = true;
      if (dlg.open) dlg.close();
      dlg.remove();
      if (returnTo && returnTo.isConnected && typeof returnTo.focus === "function") returnTo.focus();
      resolve(answer);
    };
    cancel.addEventListener("click", () => finish(false));
    ok.addEventListener("click", () => finish(true));
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); finish(false); });
    dlg.addEventListener("close", () => finish(false));
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

// toast shows a short message in the polite live region.
export function toast(message, kind = "success") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}` },
    icon(kind === "error" ? "alert" : kind === "success" ? "check" : "info", { cls: "toast-icon" }),
    h("span", null, message),
    h("button", { type: "button", class: "icon-btn toast-close", "aria-label": "Dismiss", onclick: () => el.remove() }, icon("close", { size: 16 })));
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 12000 : 5000);
}

// banner fills container with a message. kind: error, warning, info.
// actions are buttons appended after the text. Errors and warnings are alerts.
export function banner(container, kind, message, ...actions) {
  clear(container);
  if (!message) {
    container.hidden = true;
    return;
  }
  container.hidden = false;
  container.className = `banner banner-${kind}`;
  container.setAttribute("role", kind === "info" ? "status" : "alert");
  append(container, [
    icon(kind === "info" ? "info" : kind === "warning" ? "warn" : "alert", { cls: "banner-icon" }),
    h("div", { class: "banner-text" }, message),
    actions.filter(Boolean).length ? h("div", { class: "banner-actions" }, actions) : null]);
}

// busyButton disables button and shows a spinner and label while f runs.
export async function busyButton(button, label, f) {
  const old = [...button.childNodes];
  const wasDisabled = button.disabled;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.classList.add("is-busy");
  clear(button).append(icon("spinner", { cls: "spin", size: 16 }), h("span", null, label));
  try {
    return await f();
  } finally {
    button.removeAttribute("aria-busy");
    button.classList.remove("is-busy");
    clear(button).append(...old);
    button.disabled = wasDisabled;
  }
}
