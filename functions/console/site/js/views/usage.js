// Tenant view (scope usage:read): the month's usage by day and model, its cost, and the
// tenant's balance and budget; the models its plan includes (GET /v1/models, scope inference)
// with their prices, and the month's totals per model.

import { get } from "../api.js";
import { stackedBars } from "../charts.js";
import {
  clear, currentMonth, empty, errorState, facts, field, fmtInt, fmtMoney, fmtTime, h, loading, monthLabel,
  monthRange, notAvailable, section, soleCurrency, sumDecimals, table,
} from "../dom.js";

export async function renderUsage(container, { me }) {
  const month = h("input", { type: "month", value: currentMonth(), required: true, max: currentMonth() });
  const body = h("div.stack");
  container.append(
    h("div.view-head", {},
      h("div", {}, h("h1", { tabindex: "-1" }, "Usage"),
        h("p.muted", {}, `Requests, tokens and cost of ${me.tenant_name || me.tenant_id}, per day and model (UTC).`)),
      h("form.inline", { onsubmit: (e) => e.preventDefault() }, field("Month", month))),
    body);
  const show = () => showMonth(body, month.value || currentMonth());
  month.addEventListener("change", show);
  await show();
}

async function showMonth(body, month) {
  const { start, end, days } = monthRange(month);
  const usageCard = section(`Usage in ${monthLabel(month)}`, loading("usage"));
  const balanceCard = section("Balance and budget", loading("the balance"));
  const modelsCard = section("Models on your plan", loading("the models"));
  clear(body, h("div.grid-2", {}, summaryPlaceholder(month), balanceCard), usageCard, modelsCard);
  const [usage, balance, models] = await Promise.allSettled([
    get("/v1/usage", { start, end, group_by: "day,model" }),
    get("/v1/balance"),
    get("/v1/models"),
  ]);
  fillBalance(balanceCard, balance);
  fillModels(modelsCard, models);
  if (usage.status === "rejected") {
    clear(body.querySelector(".summary"), errorState(usage.reason, "the totals"));
    replaceBody(usageCard, errorState(usage.reason, "usage"));
    return;
  }
  const rows = usage.value.data;
  clear(body.querySelector(".summary"), summary(rows));
  if (!rows.length) {
    replaceBody(usageCard, empty(`No usage in ${monthLabel(month)}.`,
      "Requests to POST /v1/embeddings with this tenant's keys appear here within seconds. Pick another month above to look back."));
    return;
  }
  replaceBody(usageCard, dailyChart(rows, month, days), modelTable(rows), usageTable(rows));
}

function fillModels(card, result) {
  if (result.status === "rejected") {
    replaceBody(card, result.reason.unavailable ? notAvailable("Models") : errorState(result.reason, "the models"));
    return;
  }
  const price = (m) => (typeof m.price_per_1k_tokens === "string"
    ? fmtMoney(m.price_per_1k_tokens, m.currency) : "tiered");
  replaceBody(card, table({
    caption: "The models this tenant's plan includes (the request's \"model\" picks one)",
    columns: [
      { label: "Model", value: (m) => m.id, header: true },
      { label: "Dimensions", value: (m) => fmtInt(m.dimensions), numeric: true },
      { label: "Tokens an input", value: (m) => fmtInt(m.max_input_tokens), numeric: true },
      { label: "Price per 1,000 tokens", value: price, numeric: true },
    ],
    rows: result.value.data,
  }));
}

function modelTable(rows) {
  const currency = soleCurrency(rows);
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const totals = models.map((model) => {
    const mine = rows.filter((r) => r.model === model);
    return { model, requests: mine.reduce((n, r) => n + r.requests, 0),
      prompt_tokens: mine.reduce((n, r) => n + r.prompt_tokens, 0), cost: sumDecimals(mine.map((r) => r.cost)),
      currency: mine[0].currency };
  });
  return table({
    caption: "Totals by model",
    columns: [
      { label: "Model", value: (r) => r.model, header: true },
      { label: "Requests", value: (r) => fmtInt(r.requests), numeric: true },
      { label: "Tokens", value: (r) => fmtInt(r.prompt_tokens), numeric: true },
      { label: currency ? `Cost (${currency})` : "Cost", value: (r) => fmtMoney(r.cost, currency ? "" : r.currency), numeric: true },
    ],
    rows: totals,
  });
}

function summaryPlaceholder(month) {
  return section(`Totals, ${monthLabel(month)}`, h("div.summary", {}, loading("totals")));
}

function summary(rows) {
  const currency = soleCurrency(rows);
  return h("div.kpis", {},
    kpi("Requests", fmtInt(rows.reduce((n, r) => n + r.requests, 0))),
    kpi("Tokens", fmtInt(rows.reduce((n, r) => n + r.prompt_tokens, 0))),
    kpi("Cost", !rows.length ? "0.00" : currency ? fmtMoney(sumDecimals(rows.map((r) => r.cost)), currency) : "see the table"));
}

export function kpi(label, value) {
  return h("div.kpi", {}, h("span.kpi-label", {}, label), h("span.kpi-value", {}, value));
}

function replaceBody(card, ...nodes) {
  const heading = card.querySelector("h2");
  clear(card, heading, ...nodes);
}

function dailyChart(rows, month, days) {
  const dates = Array.from({ length: days }, (_, i) => `${month}-${String(i + 1).padStart(2, "0")}`);
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const series = models.map((model) => ({
    name: model,
    values: dates.map((d) => rows.filter((r) => r.date === d && r.model === model).reduce((n, r) => n + r.prompt_tokens, 0)),
  }));
  const perDay = dates.map((d, i) => [d, series.reduce((n, s) => n + s.values[i], 0)]);
  const active = perDay.filter(([, n]) => n > 0);
  const [peakDay, peak] = active.reduce((best, cur) => (cur[1] > best[1] ? cur : best), ["", 0]);
  const total = active.reduce((n, [, v]) => n + v, 0);
  const text = `Bar chart of tokens per day in ${monthLabel(month)}, stacked by model (${models.join(", ")}): `
    + `${fmtInt(total)} tokens on ${active.length} day${active.length === 1 ? "" : "s"}; `
    + `the busiest day was ${peakDay} with ${fmtInt(peak)} tokens. The table below has the same numbers.`;
  return stackedBars({
    labels: dates.map((d) => String(Number(d.slice(8)))), series, summary: text, valueLabel: "tokens",
    categoryLabel: `day of ${monthLabel(month)} (UTC)`,
  });
}

function usageTable(rows) {
  const currency = soleCurrency(rows);
  return table({
    caption: "Usage by day and model (the numbers of the chart above)",
    columns: [
      { label: "Date", value: (r) => r.date },
      { label: "Model", value: (r) => r.model, header: false },
      { label: "Requests", value: (r) => fmtInt(r.requests), numeric: true },
      { label: "Tokens", value: (r) => fmtInt(r.prompt_tokens), numeric: true },
      { label: currency ? `Cost (${currency})` : "Cost", value: (r) => fmtMoney(r.cost, currency ? "" : r.currency), numeric: true },
    ],
    rows,
    footer: [["Total", "", fmtInt(rows.reduce((n, r) => n + r.requests, 0)),
      fmtInt(rows.reduce((n, r) => n + r.prompt_tokens, 0)),
      currency ? fmtMoney(sumDecimals(rows.map((r) => r.cost))) : "—"]],
  });
}

function fillBalance(card, result) {
  if (result.status === "rejected") {
    replaceBody(card, result.reason.unavailable ? notAvailable("Balance and budget") : errorState(result.reason, "the balance"));
    return;
  }
  replaceBody(card, balanceFacts(result.value));
}

/** The balance object of CONTRACT §8 (also used by the admin's tenant page). */
export function balanceFacts(balance) {
  const currency = balance.currency || "";
  const pairs = [
    ["Billing mode", balance.mode || "—"],
    ["Credits remaining", fmtMoney(balance.credits_remaining, currency)],
    ["Cost this month", fmtMoney(balance.month_to_date_cost, currency)],
  ];
  const budget = balance.budget;
  if (budget && budget.monthly_amount) {
    const spent = Number(balance.month_to_date_cost || 0);
    const limit = Number(budget.monthly_amount);
    const share = limit > 0 ? Math.min(spent / limit, 1) : 0;
    pairs.push(["Monthly budget", `${fmtMoney(budget.monthly_amount, currency)} (${budget.hard ? "hard: requests stop at the limit" : "soft: alerts only"})`]);
    pairs.push(["Budget used", h("span.meter-row", {},
      h("meter", { min: 0, max: 1, low: 0.8, high: 0.95, optimum: 0, value: share, "aria-label": "Budget used" }),
      ` ${Math.round(share * 100)} %`)]);
  } else {
    pairs.push(["Monthly budget", "none set"]);
  }
  const node = facts(pairs);
  const grants = balance.grants || [];
  if (!grants.length) return node;
  return h("div.stack", {}, node, table({
    caption: "Credit grants (spent soonest-expiring first)",
    columns: [
      { label: "Granted", value: (g) => fmtTime(g.created_at) },
      { label: "Amount", value: (g) => fmtMoney(g.amount, currency), numeric: true },
      { label: "Remaining", value: (g) => fmtMoney(g.remaining, currency), numeric: true },
      { label: "Expires", value: (g) => fmtTime(g.expires_at) },
    ],
    rows: grants,
  }));
}
