// Admin view: webhooks (create with the signing secret shown once), their delivery attempts,
// and the recent events (CONTRACT §8). Every endpoint may be missing on an older deployment.

import { get, post } from "../api.js";
import { checkbox, clear, empty, errorState, field, fmtTime, h, loading, notAvailable, section, table } from "../dom.js";
import { handleSubmit, secretPanel } from "../ui.js";

const EVENT_TYPES = ["budget.threshold_crossed", "credits.low", "credits.exhausted", "key.revoked", "key.expiring",
  "tenant.suspended"];

export async function renderWebhooks(container) {
  const created = h("div");
  const listCard = section("Endpoints", loading("webhooks"));
  const deliveries = h("div");
  const eventsCard = section("Recent events", loading("events"));
  container.append(
    h("div.view-head", {}, h("div", {}, h("h1", { tabindex: "-1" }, "Webhooks"),
      h("p.muted", {}, "Signed event notifications (Maas-Signature: t=…,v1=HMAC-SHA256). Receivers dedupe on the event id."))),
    section("Create webhook", createForm(created, () => fillList(listCard, deliveries))), created,
    listCard, deliveries, eventsCard);
  await Promise.all([fillList(listCard, deliveries), fillEvents(eventsCard)]);
}

function createForm(created, redraw) {
  const url = h("input", { name: "url", type: "url", required: true, placeholder: "https://example.com/hooks/maas", autocomplete: "off" });
  const events = h("fieldset.scopes", {}, h("legend", {}, "Events"),
    EVENT_TYPES.map((type) => checkbox(type, { name: "events", value: type, checked: true })));
  const form = h("form.stack", { novalidate: true },
    field("Endpoint URL", url, "https in AWS; the local stack also accepts http://127.0.0.1."), events,
    h("div", {}, h("button.button", { type: "submit" }, "Create webhook")));
  handleSubmit(form, async (data) => {
    const body = { url: String(data.get("url") || "").trim(), events: data.getAll("events") };
    if (!body.url) throw new Error("Enter the endpoint URL.");
    if (!body.events.length) throw new Error("Choose at least one event.");
    const hook = await post("/billing/webhooks", body, { idempotent: true });
    clear(created, secretPanel({
      title: `Signing secret of webhook ${hook.id}`, secret: hook.secret, copyLabel: "Copy secret",
      note: "Copy the signing secret now: it is shown once. Verify each delivery's Maas-Signature with it.",
    }));
    form.reset();
    await redraw();
    return "Webhook created.";
  });
  return form;
}

async function fillList(card, deliveries) {
  const heading = card.querySelector("h2");
  let hooks;
  try {
    hooks = (await get("/billing/webhooks")).data;
  } catch (failure) {
    clear(card, heading, failure.unavailable ? notAvailable("Webhooks") : errorState(failure, "the webhooks"));
    return;
  }
  if (!hooks.length) {
    clear(card, heading, empty("No webhooks yet.", "Create one above to be told about budgets, credits and keys."));
    return;
  }
  clear(card, heading, table({
    caption: "Webhook endpoints",
    columns: [
      { label: "URL", value: (w) => w.url },
      { label: "Id", value: (w) => h("code", {}, w.id) },
      { label: "Events", value: (w) => (w.events || []).join(", ") },
      { label: "Created", value: (w) => fmtTime(w.created_at || w.created) },
      {
        label: "Deliveries",
        value: (w) => h("button.button.secondary.small", { type: "button", onclick: () => showDeliveries(deliveries, w) }, "Show deliveries"),
      },
    ],
    rows: hooks,
  }));
}

async function showDeliveries(target, hook) {
  const card = section(`Deliveries of ${hook.url}`, loading("deliveries"));
  clear(target, card);
  const heading = card.querySelector("h2");
  heading.setAttribute("tabindex", "-1");
  heading.focus();
  try {
    const attempts = (await get(`/billing/webhooks/${encodeURIComponent(hook.id)}/deliveries`)).data;
    clear(card, heading, attempts.length ? table({
      caption: "Delivery attempts, newest first",
      columns: [
        { label: "Event", value: (d) => h("code", {}, d.event_id || d.id || "—") },
        { label: "Attempt", value: (d) => String(d.attempt ?? "—"), numeric: true },
        { label: "Time", value: (d) => fmtTime(d.attempted_at || d.created_at || d.timestamp) },
        { label: "HTTP status", value: (d) => String(d.status_code ?? d.response_status ?? "—") },
        { label: "Outcome", value: (d) => d.status || d.outcome || d.error || "—" },
      ],
      rows: attempts,
    }) : empty("No deliveries yet.", "Attempts appear here when a matching event occurs."));
  } catch (failure) {
    clear(card, heading, failure.unavailable ? notAvailable("Delivery log") : errorState(failure, "the deliveries"));
  }
}

async function fillEvents(card) {
  const heading = card.querySelector("h2");
  try {
    const events = (await get("/billing/events")).data;
    clear(card, heading, events.length ? table({
      caption: "Events, newest first",
      columns: [
        { label: "Event", value: (e) => h("code", {}, e.id) },
        { label: "Type", value: (e) => e.type },
        { label: "Tenant", value: (e) => e.tenant_id || "—" },
        { label: "Created", value: (e) => fmtTime(typeof e.created === "number" ? new Date(e.created * 1000).toISOString() : e.created) },
        { label: "Data", value: (e) => h("code.small", {}, JSON.stringify(e.data || {})) },
      ],
      rows: events,
    }) : empty("No events yet.", "Budgets crossing a threshold, low credits, revoked keys and suspensions show up here."));
  } catch (failure) {
    clear(card, heading, failure.unavailable ? notAvailable("Events") : errorState(failure, "the events"));
  }
}
