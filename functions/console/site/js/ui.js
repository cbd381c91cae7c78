// Shared interactions: the confirmation dialog, the status toast, the one-time secret panel,
// and forms that report the API's answer next to themselves.

import { ApiError } from "./api.js";
import { clear, h } from "./dom.js";

const $ = (id) => document.getElementById(id);

/**
 * A modal confirmation (an HTML <dialog>, never window.confirm). Resolves true when the
 * user confirms, false on Cancel or Escape. `body` may hold extra inputs read by the caller.
 */
export function confirmAction({ title, text, confirm, body = null, danger = true }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  clear($("confirm-body"), body);
  const ok = $("confirm-ok");
  ok.textContent = confirm;
  ok.className = `button ${danger ? "danger" : ""}`;
  // The page behind the dialog is inert and hidden from assistive technology (and from
  // role queries) while it is open, so "Revoke" means the dialog's button, not the row's.
  const background = ["main", "nav", "who"].map((id) => $(id)).filter(Boolean);
  for (const node of background) {
    node.inert = true;
    node.setAttribute("aria-hidden", "true");
  }
  return new Promise((resolve) => {
    const finish = (value) => {
      for (const node of background) {
        node.inert = false;
        node.removeAttribute("aria-hidden");
      }
      ok.removeEventListener("click", onOk);
      $("confirm-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onOk = () => finish(true);
    const onCancel = (event) => { event.preventDefault(); finish(false); };
    ok.addEventListener("click", onOk);
    $("confirm-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

let toastTimer;
export function toast(message) {
  const node = $("toast");
  node.textContent = message;
  node.classList.add("visible");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.classList.remove("visible"), 5000);
}

/**
 * A secret the API returns once (a new key, a webhook signing secret): shown with a copy
 * button until the user dismisses it; then it is gone from the page for good.
 */
export function secretPanel({ title, secret, note, copyLabel = "Copy key" }) {
  const code = h("code.secret", { id: "new-secret" }, secret);
  const status = h("span.muted.small", { role: "status" });
  const panel = h("div.secret-panel", { role: "region", "aria-label": title },
    h("h3", {}, title),
    h("p", {}, note),
    h("div.secret-row", {}, code,
      h("button.button", {
        type: "button",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(secret);
            status.textContent = "Copied to the clipboard.";
          } catch {
            window.getSelection().selectAllChildren(code); // the user copies it by hand
            status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
          }
        },
      }, copyLabel)),
    status,
    h("div", {}, h("button.button.secondary", { type: "button", onclick: () => panel.remove() }, "Done, I stored it")));
  return panel;
}

/**
 * Wires a form to an async action: the submit button is disabled while it runs, and the
 * outcome (or the API's error message) is announced next to the form.
 */
export function handleSubmit(form, action) {
  const message = h("p.form-message", { role: "status", "aria-live": "polite" });
  form.append(message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    message.className = "form-message";
    message.textContent = "";
    try {
      const text = await action(new FormData(form));
      if (text) message.textContent = text;
    } catch (failure) {
      message.className = "form-message error";
      message.textContent = failure instanceof ApiError && failure.unavailable
        ? "Not available on this deployment yet."
        : failure.message;
    } finally {
      if (button) button.disabled = false;
    }
  });
  return form;
}
