// API keys: the tenant's own (scope usage:read, read-only) and the table the admin's tenant
// page uses with its Rotate and Revoke actions.

import { all } from "../api.js";
import { badge, clear, empty, errorState, fmtShortTime, h, loading, section, table, uid } from "../dom.js";

export async function renderOwnKeys(container, { me }) {
  const card = section("Keys of this tenant", loading("keys"));
  container.append(
    h("div.view-head", {}, h("div", {}, h("h1", { tabindex: "-1" }, "My keys"),
      h("p.muted", {}, `The API keys of ${me.tenant_name || me.tenant_id}. Secrets are never shown again after creation; `
        + "an administrator creates, rotates and revokes keys."))),
    card);
  const heading = card.querySelector("h2");
  try {
    const keys = await all("/v1/keys");
    clear(card, heading, keys.length ? keysTable(keys, { current: me.key_id }) : empty("This tenant has no keys."));
  } catch (failure) {
    clear(card, heading, errorState(failure, "the keys"));
  }
}

const STATUS_ORDER = { active: 0, expired: 1, revoked: 2 };

/** Keys, active first. actions(key, describedBy) returns the row's buttons (admin only). */
export function keysTable(keys, { current = null, actions = null } = {}) {
  const sorted = [...keys].sort((a, b) => (STATUS_ORDER[a.status] ?? 3) - (STATUS_ORDER[b.status] ?? 3)
    || String(b.created_at).localeCompare(String(a.created_at)));
  const columns = [
    {
      label: "Key",
      value: (k) => {
        k._label = uid("key");
        return h("span", { id: k._label }, k.name || "(unnamed)", k.id === current ? h("span.muted", {}, " (this key)") : null,
          h("br"), h("code.small", {}, k.id));
      },
    },
    { label: "Scopes", value: (k) => (k.scopes || []).join(", ") },
    { label: "Created", value: (k) => h("span.nowrap", {}, fmtShortTime(k.created_at)) },
    { label: "Expires", value: (k) => h("span.nowrap", {}, k.expires_at ? fmtShortTime(k.expires_at) : "never") },
    { label: "Status", value: (k) => h("span", {}, badge(k.status), k.rotated_to ? h("span.muted.small", {}, h("br"), `→ ${k.rotated_to}`) : null) },
  ];
  if (actions) columns.push({ label: "Actions", value: (k) => h("div.row.nowrap", {}, actions(k, k._label)) });
  return table({ caption: "API keys (times in UTC)", columns, rows: sorted, className: "keys" });
}
