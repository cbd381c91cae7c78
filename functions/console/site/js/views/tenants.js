// Admin view (scope admin): tenants (create, plan, limits, suspend), their keys (create with
// the secret shown once, rotate with grace, revoke with confirmation), credits and budget.

import { all, del, get, patch, post } from "../api.js";
import {
  badge, checkbox, clear, empty, errorState, facts, field, fmtInt, fmtTime, h, loading, notAvailable, section, table,
} from "../dom.js";
import { confirmAction, handleSubmit, secretPanel, toast } from "../ui.js";
import { keysTable } from "./keys.js";
import { balanceFacts } from "./usage.js";

const LIMITS = [
  ["requests_per_minute", "Requests per minute"],
  ["tokens_per_minute", "Tokens per minute"],
  ["monthly_tokens", "Monthly tokens"],
  ["max_concurrent_requests", "Max concurrent requests"],
];
const SCOPES = [
  ["inference", "inference: call the embeddings API"],
  ["usage:read", "usage:read: read its own usage and keys"],
  ["finance", "finance: all usage reports and invoices"],
  ["admin", "admin: manage tenants and keys (implies finance)"],
];
const DEFAULT_SCOPES = ["inference", "usage:read"];

export async function renderTenants(container, { arg, me, navigate }) {
  const plansReady = get("/billing/plans").then((page) => page.data);
  const listCard = section("All tenants", loading("tenants"));
  const detail = h("div.detail", { "aria-live": "polite" });
  container.append(
    h("div.view-head", {}, h("div", {}, h("h1", { tabindex: "-1" }, "Tenants"),
      h("p.muted", {}, "Create tenants, choose their plan and limits, issue and revoke their keys."))),
    h("div.master-detail", {}, h("div.stack", {}, createTenantCard(navigate, plansReady), listCard), detail));
  const listHeading = listCard.querySelector("h2");
  let plans = [];
  try {
    const [tenants, planList] = await Promise.all([all("/billing/tenants"), plansReady]);
    plans = planList;
    clear(listCard, listHeading, tenantList(tenants, arg));
  } catch (failure) {
    clear(listCard, listHeading, errorState(failure, "the tenants"));
    return;
  }
  if (arg) await renderTenant(detail, arg, { me, plans, navigate });
  else clear(detail, h("div.card.state.empty", {}, h("p", {}, "Select a tenant to see its keys, limits, credits and budget."),
    h("p.muted", {}, "Or create one with the form on the left.")));
}

// ------------------------------------------------------------------------------ list, create

function createTenantCard(navigate, plansReady) {
  const name = h("input", { name: "name", type: "text", required: true, maxlength: 200, autocomplete: "off" });
  const plan = h("select", { name: "plan", required: true }, h("option", { value: "" }, "Loading plans…"));
  plansReady.then((plans) => clear(plan, plans.map((p) => h("option", { value: p.id, selected: p.id === "starter" }, planLabel(p)))),
    () => clear(plan, h("option", { value: "" }, "Plans could not be loaded")));
  const form = h("form.stack", { novalidate: true },
    field("Tenant name", name), field("Plan", plan),
    h("div", {}, h("button.button", { type: "submit" }, "Create tenant")));
  handleSubmit(form, async (data) => {
    const tenantName = String(data.get("name") || "").trim();
    if (!tenantName) {
      name.focus();
      throw new Error("Enter the tenant's name.");
    }
    await plansReady; // a quick click must not send the placeholder
    const tenant = await post("/billing/tenants", { name: tenantName, plan: plan.value }, { idempotent: true });
    toast(`Tenant "${tenant.name}" created.`);
    navigate("tenants", tenant.id);
    return "";
  });
  return section("Create tenant", form);
}

function planLabel(plan) {
  const prices = Object.values(plan.price_per_1k_tokens || {}).map((price) => `${price} ${plan.currency} per 1k tokens`);
  return `${plan.id}${prices.length ? `: ${prices.join(", ")}` : ""}`;
}

function tenantList(tenants, selected) {
  if (!tenants.length) return empty("No tenants yet.", "Create the first one with the form above.");
  const filter = h("input", { type: "search", autocomplete: "off" });
  const rows = h("div");
  const draw = () => {
    const needle = filter.value.trim().toLowerCase();
    const shown = tenants.filter((t) => !needle || t.name.toLowerCase().includes(needle) || t.id.includes(needle));
    clear(rows, shown.length ? table({
      caption: `${tenants.length} tenant${tenants.length === 1 ? "" : "s"}`,
      columns: [
        { label: "Name", value: (t) => h("a", { href: `#/tenants/${encodeURIComponent(t.id)}`, "aria-current": t.id === selected ? "true" : null }, t.name) },
        { label: "Plan", value: (t) => t.plan },
        { label: "Status", value: (t) => badge(t.status) },
        { label: "Created", value: (t) => h("span.nowrap", {}, fmtTime(t.created_at).slice(0, 10)) },
      ],
      rows: [...tenants].filter((t) => shown.includes(t)).sort((a, b) => String(b.created_at).localeCompare(String(a.created_at))),
      className: "selectable",
    }) : empty("No tenant matches the filter."));
  };
  filter.addEventListener("input", draw);
  draw();
  return h("div.stack", {}, tenants.length > 5 ? field("Filter tenants", filter) : null, rows);
}

// ------------------------------------------------------------------------------ one tenant

async function renderTenant(detail, tenantId, { me, plans, navigate }) {
  clear(detail, h("div.card", {}, loading("the tenant")));
  let tenant;
  try {
    tenant = await get(`/billing/tenants/${encodeURIComponent(tenantId)}`);
  } catch (failure) {
    clear(detail, h("div.card", {}, errorState(failure, "the tenant")));
    return;
  }
  const refresh = () => navigate("tenants", tenant.id);
  const keysCard = section("Keys", loading("keys"));
  clear(detail,
    tenantHeader(tenant, me, refresh),
    keysCard,
    planAndLimits(tenant, plans, refresh),
    creditsCard(tenant),
    budgetCard(tenant));
  await fillKeys(keysCard, tenant);
}

function tenantHeader(tenant, me, refresh) {
  const suspended = tenant.status === "suspended";
  const toggle = h("button.button", {
    type: "button",
    class: suspended ? "button" : "button danger-outline",
    disabled: tenant.id === me.tenant_id ? true : null,
    title: tenant.id === me.tenant_id ? "An admin key cannot suspend its own tenant." : null,
    onclick: async () => {
      const ok = await confirmAction(suspended
        ? { title: `Reactivate ${tenant.name}?`, text: "Its keys work again from the next request.", confirm: "Reactivate", danger: false }
        : { title: `Suspend ${tenant.name}?`, text: "Every key of this tenant is refused (403) from the very next request, until it is reactivated.", confirm: "Suspend" });
      if (!ok) return;
      try {
        await patch(`/billing/tenants/${encodeURIComponent(tenant.id)}`, { status: suspended ? "active" : "suspended" });
        toast(suspended ? "Tenant reactivated." : "Tenant suspended.");
        refresh();
      } catch (failure) {
        toast(failure.message);
      }
    },
  }, suspended ? "Reactivate tenant" : "Suspend tenant");
  return h("section.card.tenant-head", { "aria-label": "Tenant" },
    h("div.row.between", {},
      h("div", {}, h("h2", {}, tenant.name), h("p.muted", {}, h("code", {}, tenant.id), ` · plan ${tenant.plan} · created ${fmtTime(tenant.created_at)}`)),
      h("div.row", {}, badge(tenant.status), toggle)),
    facts(LIMITS.map(([name, label]) => [label, h("span", {}, fmtInt(tenant.limits[name]),
      name in (tenant.limit_overrides || {}) ? h("span.muted.small", {}, " (override)") : null)])));
}

async function fillKeys(card, tenant) {
  const heading = card.querySelector("h2");
  const created = h("div");
  let keys;
  try {
    keys = await all(`/billing/tenants/${encodeURIComponent(tenant.id)}/keys`);
  } catch (failure) {
    clear(card, heading, errorState(failure, "the keys"));
    return;
  }
  const list = h("div");
  const redraw = async () => {
    keys = await all(`/billing/tenants/${encodeURIComponent(tenant.id)}/keys`);
    drawKeys();
  };
  const drawKeys = () => clear(list, keys.length
    ? keysTable(keys, { actions: (key, labelId) => keyActions(key, labelId, created, redraw) })
    : empty("No keys yet.", "Create one above: its secret is shown once."));
  drawKeys();
  clear(card, heading, createKeyForm(tenant, created, redraw), created, list);
}

function createKeyForm(tenant, created, redraw) {
  const name = h("input", { name: "name", type: "text", maxlength: 200, autocomplete: "off", placeholder: "e.g. production" });
  const expires = h("input", { name: "expires_at", type: "datetime-local" });
  const scopes = h("fieldset.scopes", {}, h("legend", {}, "Scopes"),
    SCOPES.map(([value, label]) => checkbox(label, { name: "scopes", value, checked: DEFAULT_SCOPES.includes(value) })));
  const form = h("form.stack", { novalidate: true },
    h("div.grid-2", {}, field("Key name", name), field("Expires (optional, UTC)", expires, "Empty: never expires.")),
    scopes,
    h("div", {}, h("button.button", { type: "submit" }, "Create key")));
  handleSubmit(form, async (data) => {
    const body = { scopes: data.getAll("scopes") };
    if (!body.scopes.length) throw new Error("Choose at least one scope.");
    const keyName = String(data.get("name") || "").trim();
    if (keyName) body.name = keyName;
    if (data.get("expires_at")) body.expires_at = `${data.get("expires_at")}:00Z`;
    const key = await post(`/billing/tenants/${encodeURIComponent(tenant.id)}/keys`, body, { idempotent: true });
    clear(created, secretPanel({
      title: `New key ${key.name ? `"${key.name}" ` : ""}(${key.id})`,
      secret: key.key,
      note: "Copy this key now: it is shown once and cannot be recovered. Store it in your secret manager.",
    }));
    form.reset();
    await redraw();
    return "Key created.";
  });
  return form;
}

function keyActions(key, labelId, created, redraw) {
  if (key.status !== "active") return [];
  const rotate = h("button.button.secondary.small", {
    type: "button", "aria-describedby": labelId,
    onclick: async () => {
      const grace = h("select", {}, [["0", "none: the old key stops now"], ["3600", "1 hour"], ["86400", "24 hours"], ["604800", "7 days"]]
        .map(([value, label]) => h("option", { value, selected: value === "86400" }, label)));
      const ok = await confirmAction({
        title: `Rotate key ${key.name || key.id}?`,
        text: "A new key with the same name and scopes is issued; the old one keeps working during the grace period.",
        confirm: "Rotate key", danger: false, body: field("Grace period for the old key", grace),
      });
      if (!ok) return;
      try {
        const issued = await post(`/billing/keys/${encodeURIComponent(key.id)}/rotate`, { grace_seconds: Number(grace.value) }, { idempotent: true });
        clear(created, secretPanel({
          title: `Rotated: new key ${issued.id}`, secret: issued.key,
          note: "Copy this key now: it is shown once. The old key stops working when the grace period ends.",
        }));
        await redraw();
      } catch (failure) {
        toast(failure.message);
      }
    },
  }, "Rotate");
  const revoke = h("button.button.danger.small", {
    type: "button", "aria-describedby": labelId,
    onclick: async () => {
      const ok = await confirmAction({
        title: `Revoke key ${key.name || key.id}?`,
        text: `Key ${key.id} stops working immediately, on the very next request. This cannot be undone.`,
        confirm: "Revoke",
      });
      if (!ok) return;
      try {
        await del(`/billing/keys/${encodeURIComponent(key.id)}`);
        toast(`Key ${key.id} revoked.`);
        await redraw();
      } catch (failure) {
        toast(failure.message);
      }
    },
  }, "Revoke");
  return [rotate, revoke];
}

function planAndLimits(tenant, plans, refresh) {
  const plan = h("select", { name: "plan" },
    plans.map((p) => h("option", { value: p.id, selected: p.id === tenant.plan }, planLabel(p))));
  const overrides = tenant.limit_overrides || {};
  const inputs = LIMITS.map(([name, label]) => field(label, h("input", {
    name, type: "number", min: 1, step: 1, inputmode: "numeric", value: overrides[name] ?? "",
    placeholder: `plan: ${fmtInt(planLimit(plans, tenant.plan, name))}`,
  })));
  const form = h("form.stack", { novalidate: true },
    field("Plan", plan),
    h("p.muted.small", {}, "Limit overrides: empty uses the plan's value."),
    h("div.grid-2", {}, inputs),
    h("div", {}, h("button.button", { type: "submit" }, "Save plan and limits")));
  handleSubmit(form, async (data) => {
    const limits = {};
    for (const [name] of LIMITS) {
      const raw = String(data.get(name) || "").trim();
      limits[name] = raw === "" ? null : Number(raw);
    }
    await patch(`/billing/tenants/${encodeURIComponent(tenant.id)}`, { plan: data.get("plan"), limits });
    toast("Plan and limits saved.");
    refresh();
    return "Saved.";
  });
  return section("Plan and limits", form);
}

function planLimit(plans, planId, name) {
  const plan = plans.find((p) => p.id === planId);
  return plan ? plan.limits[name] : "";
}

// ------------------------------------------------------------------------------ money

function creditsCard(tenant) {
  const card = section("Credits and billing mode", loading("the balance"));
  const heading = card.querySelector("h2");
  const path = `/billing/tenants/${encodeURIComponent(tenant.id)}`;
  get(`${path}/balance`).then((balance) => {
    clear(card, heading, balanceFacts(balance), grantForm(path), modeForm(path, balance));
  }, (failure) => {
    clear(card, heading, failure.unavailable ? notAvailable("Credits and balance") : errorState(failure, "the balance"));
  });
  return card;
}

function grantForm(path) {
  const amount = h("input", { name: "amount", type: "text", inputmode: "decimal", required: true, placeholder: "10.00", pattern: "\\d+(\\.\\d+)?" });
  const expires = h("input", { name: "expires_at", type: "datetime-local" });
  const note = h("input", { name: "note", type: "text", maxlength: 200 });
  const form = h("form.stack", { novalidate: true },
    h("h3", {}, "Grant credits"),
    h("div.grid-3", {}, field("Amount", amount), field("Expires (optional, UTC)", expires), field("Note (optional)", note)),
    h("div", {}, h("button.button", { type: "submit" }, "Grant credits")));
  handleSubmit(form, async (data) => {
    const value = String(data.get("amount") || "").trim();
    if (!/^\d+(\.\d+)?$/.test(value)) throw new Error("Enter an amount such as 10.00.");
    const body = { amount: value };
    if (data.get("expires_at")) body.expires_at = `${data.get("expires_at")}:00Z`;
    if (String(data.get("note") || "").trim()) body.note = String(data.get("note")).trim();
    // One Idempotency-Key per submission: a retried request never grants twice.
    const grant = await post(`${path}/credits`, body, { idempotent: true });
    toast(`Granted ${grant.amount}.`);
    form.reset();
    return `Granted ${grant.amount}; remaining on this grant ${grant.remaining}.`;
  });
  return form;
}

function modeForm(path, balance) {
  const mode = h("select", { name: "mode" }, ["postpaid", "prepaid"].map((m) => h("option", { value: m, selected: m === balance.mode }, m)));
  const alert = h("input", { name: "low_balance_alert", type: "text", inputmode: "decimal", placeholder: "1.00" });
  const form = h("form.stack", { novalidate: true },
    h("h3", {}, "Billing mode"),
    h("div.grid-2", {}, field("Mode", mode, "Prepaid: requests are refused (402) when credits run out."),
      field("Low-balance alert (optional)", alert)),
    h("div", {}, h("button.button.secondary", { type: "submit" }, "Save billing mode")));
  handleSubmit(form, async (data) => {
    const billing = { mode: data.get("mode") };
    if (String(data.get("low_balance_alert") || "").trim()) billing.low_balance_alert = String(data.get("low_balance_alert")).trim();
    await patch(path, { billing });
    return "Billing mode saved.";
  });
  return form;
}

function budgetCard(tenant) {
  const amount = h("input", { name: "monthly_amount", type: "text", inputmode: "decimal", placeholder: "50.00" });
  const thresholds = h("input", { name: "alert_thresholds", type: "text", value: "0.5, 0.8, 1.0" });
  const hard = checkbox("Hard budget: refuse requests (402) that would go over it", { name: "hard", checked: true });
  const form = h("form.stack", { novalidate: true },
    h("div.grid-2", {}, field("Monthly amount", amount), field("Alert thresholds", thresholds, "Fractions of the budget, comma separated.")),
    hard,
    h("div", {}, h("button.button", { type: "submit" }, "Save budget")));
  handleSubmit(form, async (data) => {
    const value = String(data.get("monthly_amount") || "").trim();
    if (!/^\d+(\.\d+)?$/.test(value)) throw new Error("Enter a monthly amount such as 50.00.");
    const alerts = String(data.get("alert_thresholds") || "").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    if (alerts.some((n) => !(n > 0))) throw new Error("Thresholds are positive fractions such as 0.5, 0.8, 1.0.");
    await patch(`/billing/tenants/${encodeURIComponent(tenant.id)}`, {
      budget: { monthly_amount: value, hard: data.get("hard") === "on", alert_thresholds: alerts },
    });
    toast("Budget saved.");
    return "Budget saved.";
  });
  return section("Budget", h("p.muted", {}, "A monthly spending limit for this tenant, checked atomically at admission."), form);
}
