// Finance view (scope finance): a month's usage by tenant (table and stacked chart), the
// invoice with its CSV (the API's own bytes), and the ledger reconciliation status.

import { download, get } from "../api.js";
import { stackedBars } from "../charts.js";
import {
  badge, clear, currentMonth, empty, errorState, facts, field, fmtInt, fmtMoney, fmtTime, h, loading, monthLabel,
  monthRange, notAvailable, section, soleCurrency, sumDecimals, table,
} from "../dom.js";
import { toast } from "../ui.js";
import { kpi } from "./usage.js";

export async function renderFinance(container) {
  const month = h("input", { type: "month", value: currentMonth(), required: true, max: currentMonth() });
  const body = h("div.stack");
  container.append(
    h("div.view-head", {},
      h("div", {}, h("h1", { tabindex: "-1" }, "Finance"),
        h("p.muted", {}, "Usage and invoices by tenant for a calendar month (UTC). Costs are exact; invoice lines are rounded once, half to even.")),
      h("form.inline", { onsubmit: (e) => e.preventDefault() }, field("Month", month))),
    body);
  const show = () => showMonth(body, month.value || currentMonth());
  month.addEventListener("change", show);
  await show();
}

async function showMonth(body, month) {
  const { start, end } = monthRange(month);
  const totals = section(`Totals, ${monthLabel(month)}`, h("div.summary", {}, loading("totals")));
  const reconcile = section("Ledger reconciliation", loading("the reconciliation status"));
  const usageCard = section(`Usage by tenant, ${monthLabel(month)}`, loading("usage"));
  const invoiceCard = section(`Invoice lines, ${monthLabel(month)}`, loading("invoices"));
  clear(body, h("div.grid-2", {}, totals, reconcile), usageCard, invoiceCard);
  const [usage, invoice, status] = await Promise.allSettled([
    get("/billing/usage", { start, end, group_by: "tenant,model" }),
    get("/billing/invoices", { month }),
    get("/billing/reconcile", { month }),
  ]);
  fillReconcile(reconcile, status);
  const names = new Map();
  if (invoice.status === "fulfilled") for (const line of invoice.value.data) names.set(line.tenant_id, line.tenant_name);
  if (usage.status === "rejected") {
    replaceBody(usageCard, errorState(usage.reason, "usage"));
    replaceBody(totals, errorState(usage.reason, "the totals"));
  } else {
    replaceBody(totals, summary(usage.value.data, invoice.status === "fulfilled" ? invoice.value : null));
    fillUsage(usageCard, usage.value.data, names, month);
  }
  if (invoice.status === "rejected") replaceBody(invoiceCard, errorState(invoice.reason, "invoices"));
  else fillInvoice(invoiceCard, invoice.value, month);
}

function replaceBody(card, ...nodes) {
  clear(card, card.querySelector("h2"), ...nodes);
}

function summary(rows, invoice) {
  const invoiced = invoice && invoice.totals && invoice.totals.length
    ? invoice.totals.map((t) => fmtMoney(t.amount, t.currency)).join(" + ")
    : "—";
  const currency = soleCurrency(rows);
  const cost = !rows.length ? "0.00" : currency ? fmtMoney(sumDecimals(rows.map((r) => r.cost)), currency) : "see the table";
  return h("div.kpis.kpis-4", {},
    kpi("Tenants with usage", fmtInt(new Set(rows.map((r) => r.tenant_id)).size)),
    kpi("Tokens", fmtInt(rows.reduce((n, r) => n + r.prompt_tokens, 0))),
    kpi("Cost (exact)", cost),
    kpi("Invoiced (rounded)", invoiced));
}

function tenantLabel(names, id) {
  return names.get(id) || id;
}

function fillUsage(card, rows, names, month) {
  if (!rows.length) {
    replaceBody(card, empty(`No usage in ${monthLabel(month)}.`, "Tenants' requests appear here within seconds of being served; pick another month above to look back."));
    return;
  }
  const tenants = [...new Set(rows.map((r) => r.tenant_id))]
    .sort((a, b) => total(rows, b) - total(rows, a));
  const models = [...new Set(rows.map((r) => r.model))].sort();
  // The largest tenants get a bar each, the rest one "others" bar; the table lists everyone.
  const shown = tenants.length > CHART_TENANTS ? tenants.slice(0, CHART_TENANTS - 1) : tenants;
  const others = tenants.slice(shown.length);
  const tokens = (ids, model) => rows.filter((r) => ids.includes(r.tenant_id) && r.model === model)
    .reduce((n, r) => n + r.prompt_tokens, 0);
  const series = models.map((model) => ({
    name: model,
    values: [...shown.map((t) => tokens([t], model)), ...(others.length ? [tokens(others, model)] : [])],
  }));
  const labels = [...shown.map((t) => truncate(tenantLabel(names, t), 28)),
    ...(others.length ? [`${others.length} other tenants`] : [])];
  const top = tenants.slice(0, 3).map((t) => `${tenantLabel(names, t)} ${fmtInt(total(rows, t))}`).join(", ");
  const text = `Stacked bar chart of tokens by tenant in ${monthLabel(month)}, one bar per tenant stacked by model `
    + `(${models.join(", ")})${others.length ? `, the smallest ${others.length} together` : ""}: `
    + `${tenants.length} tenant${tenants.length === 1 ? "" : "s"}, `
    + `${fmtInt(rows.reduce((n, r) => n + r.prompt_tokens, 0))} tokens in all; largest: ${top}. The table below has the same numbers.`;
  const chart = stackedBars({ labels, series, summary: text, valueLabel: "tokens", horizontal: true, tall: labels.length > 8 });
  const ordered = [...rows].sort((a, b) => tenants.indexOf(a.tenant_id) - tenants.indexOf(b.tenant_id) || a.model.localeCompare(b.model));
  const currencies = [...new Set(rows.map((r) => r.currency))];
  const currency = soleCurrency(rows);
  const usageTable = table({
    caption: "Usage by tenant and model (the numbers of the chart above); cost is exact, before invoice rounding",
    columns: [
      { label: "Tenant", value: (r) => h("span", {}, tenantLabel(names, r.tenant_id), h("br"), h("code.small", {}, r.tenant_id)) },
      { label: "Model", value: (r) => r.model },
      { label: "Requests", value: (r) => fmtInt(r.requests), numeric: true },
      { label: "Tokens", value: (r) => fmtInt(r.prompt_tokens), numeric: true },
      { label: currency ? `Cost (${currency})` : "Cost", value: (r) => fmtMoney(r.cost, currency ? "" : r.currency), numeric: true },
    ],
    rows: ordered,
    footer: currencies.map((cur) => {
      const mine = rows.filter((r) => r.currency === cur);
      return [currency ? "Total" : `Total ${cur}`, "", fmtInt(mine.reduce((n, r) => n + r.requests, 0)),
        fmtInt(mine.reduce((n, r) => n + r.prompt_tokens, 0)), fmtMoney(sumDecimals(mine.map((r) => r.cost)), currency ? "" : cur)];
    }),
  });
  replaceBody(card, chart, usageTable);
}

const CHART_TENANTS = 15;
const total = (rows, tenant) => rows.filter((r) => r.tenant_id === tenant).reduce((n, r) => n + r.prompt_tokens, 0);
const truncate = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

function fillInvoice(card, invoice, month) {
  const button = h("button.button", {
    type: "button",
    onclick: async () => {
      button.disabled = true;
      try {
        // The API's own CSV, byte for byte: fetched with the key, saved from a blob.
        const { blob, name } = await download("/billing/invoices", { month, format: "csv" });
        const url = URL.createObjectURL(blob);
        const link = h("a", { href: url, download: name, hidden: true });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10_000);
        toast(`Downloaded ${name}.`);
      } catch (failure) {
        toast(`Download failed: ${failure.message}`);
      } finally {
        button.disabled = false;
      }
    },
  }, "Download CSV");
  const actions = h("div.row.between", {},
    h("p.muted", {}, `One line per tenant and model; the CSV is the API's invoice for ${month}.`), button);
  if (!invoice.data.length) {
    replaceBody(card, actions, empty(`No invoice lines for ${monthLabel(month)}.`, "Lines appear once tenants have charged usage in the month."));
    return;
  }
  const currency = soleCurrency(invoice.data);
  const money = (amount, cur) => fmtMoney(amount, currency ? "" : cur);
  const lines = table({
    caption: `Invoice lines for ${month}`,
    columns: [
      { label: "Tenant", value: (l) => h("span", {}, l.tenant_name, h("br"), h("code.small", {}, l.tenant_id)) },
      { label: "Plan", value: (l) => l.plan },
      { label: "Model", value: (l) => l.model },
      { label: "Requests", value: (l) => fmtInt(l.requests), numeric: true },
      { label: "Tokens", value: (l) => fmtInt(l.prompt_tokens), numeric: true },
      { label: currency ? `Price / 1k tokens (${currency})` : "Price / 1k tokens", value: (l) => money(l.unit_price_per_1k_tokens, l.currency), numeric: true },
      { label: currency ? `Amount (${currency})` : "Amount", value: (l) => money(l.amount, l.currency), numeric: true },
    ],
    rows: invoice.data,
    footer: (invoice.totals || []).map((t) => [currency ? "Total" : `Total ${t.currency}`, "", "", fmtInt(t.requests),
      fmtInt(t.prompt_tokens), "", money(t.amount, t.currency)]),
  });
  replaceBody(card, actions, lines);
}

const RECONCILE_TEXT = {
  ok: "The rollups that reports read equal the ledger.",
  drift: "Rollups differ from the ledger: see docs/OPERATIONS.md (reconcile).",
  not_run: "Not checked for this month yet.",
};

function fillReconcile(card, result) {
  if (result.status === "rejected") {
    replaceBody(card, result.reason.unavailable ? notAvailable("Reconciliation status") : errorState(result.reason, "the reconciliation status"));
    return;
  }
  const r = result.value;
  replaceBody(card,
    h("p.row", {}, badge(r.status === "not_run" ? "not run" : r.status, r.status), h("span", {}, RECONCILE_TEXT[r.status] || "")),
    facts([
      ["Checked", fmtTime(r.checked_at)],
      ["Tenants", fmtInt(r.tenants)],
      ["Cells (tenant × day × model)", fmtInt(r.cells)],
      ["Cells with drift", fmtInt(r.drift_cells)],
      ["Tokens of drift", fmtInt(r.drift_tokens)],
    ]));
}
