// Admin view: the audit log (GET /billing/audit), newest first, a page at a time.

import { get } from "../api.js";
import { clear, empty, errorState, fmtShortTime, h, loading, section, table } from "../dom.js";

export async function renderAudit(container) {
  const card = section("Changes", loading("the audit log"));
  container.append(
    h("div.view-head", {}, h("div", {}, h("h1", { tabindex: "-1" }, "Audit log"),
      h("p.muted", {}, "Every change made through the billing API: who (key and tenant), what, and the request id."))),
    card);
  const heading = card.querySelector("h2");
  const entries = [];
  const rows = h("div");
  const more = h("button.button.secondary", { type: "button" }, "Load more");
  let cursor;
  const load = async () => {
    more.disabled = true;
    const page = await get("/billing/audit", { cursor, limit: 50 });
    entries.push(...page.data);
    cursor = page.next_cursor;
    clear(rows, entries.length ? table({
      caption: `${entries.length} entr${entries.length === 1 ? "y" : "ies"}${cursor ? " (more below)" : ""}`,
      columns: [
        { label: "Time (UTC)", value: (e) => h("span.nowrap", {}, fmtShortTime(e.timestamp)) },
        { label: "Action", value: (e) => e.action },
        { label: "Target", value: (e) => h("code", {}, e.target || "—") },
        { label: "Actor key", value: (e) => h("code", {}, e.actor_key_id || "—") },
        { label: "Details", value: (e) => details(e.details) },
        { label: "Request id", value: (e) => h("code.small", {}, e.request_id || "—") },
      ],
      rows: entries,
    }) : empty("No changes recorded yet.", "Creating a tenant or a key adds the first entry."));
    more.hidden = !cursor;
    more.disabled = false;
  };
  more.addEventListener("click", () => load().catch((failure) => rows.append(errorState(failure, "more entries"))));
  try {
    await load();
    clear(card, heading, rows, more);
  } catch (failure) {
    clear(card, heading, errorState(failure, "the audit log"));
  }
}

/** "name: acme · plan: starter": each field on its own, values as text. */
function details(fields) {
  const shown = Object.entries(fields || {}).filter(([, value]) => value !== null && value !== undefined);
  if (!shown.length) return "—";
  return h("span.details", {}, shown.map(([name, value]) => h("span.detail", {}, h("span.muted", {}, `${name}: `),
    text(value))));
}

function text(value) {
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "object") {
    // e.g. limits {"requests_per_minute": 42, "monthly_tokens": null} -> "requests_per_minute 42, monthly_tokens —"
    return Object.entries(value).map(([k, v]) => `${k} ${v === null ? "—" : text(v)}`).join(", ");
  }
  return String(value);
}
