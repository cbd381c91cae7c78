// DOM building and formatting. Every string from the API goes in as a text node
// (textContent), never as markup: a tenant named "<img src=x onerror=alert(1)>" is just text.

/** h("tag.class", {attr: value, onclick: fn}, ...children): children are nodes or text. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else if (value === true) node.setAttribute(name, ""); // also the default, so form.reset() keeps it
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

let ids = 0;
export const uid = (prefix = "id") => `${prefix}-${++ids}`;

// ---------------------------------------------------------------------------------------
// Formatting

const integer = new Intl.NumberFormat("en-US");

export const fmtInt = (value) => (value === null || value === undefined || value === "" ? "—" : integer.format(Number(value)));

/** An RFC 3339 time as "2026-11-29 12:00 UTC" (billing is in UTC). */
export function fmtTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return `${date.toISOString().slice(0, 10)} ${date.toISOString().slice(11, 16)} UTC`;
}

/** A date-time for table cells: "2026-11-29 12:00" (the column says UTC). */
export function fmtShortTime(value) {
  const text = fmtTime(value);
  return text.endsWith(" UTC") ? text.slice(0, -4) : text;
}

/** Money stays a decimal string from the API; shown exactly, grouped, with its currency. */
export function fmtMoney(amount, currency = "") {
  if (amount === null || amount === undefined || amount === "") return "—";
  const [whole, fraction] = String(amount).split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  const grouped = integer.format(BigInt(whole.replace("-", "") || "0"));
  const cents = (fraction || "").padEnd(2, "0");
  return `${sign}${grouped}.${cents}${currency ? ` ${currency}` : ""}`;
}

/** The one currency of rows, if they share one: shown once in the column header, not per cell. */
export function soleCurrency(rows) {
  const currencies = new Set(rows.map((r) => r.currency));
  return currencies.size === 1 ? [...currencies][0] : null;
}

/** Exact sum of decimal strings (no floating point), as a decimal string. */
export function sumDecimals(values) {
  let scale = 0;
  for (const value of values) scale = Math.max(scale, (String(value).split(".")[1] || "").length);
  let total = 0n;
  for (const value of values) {
    const [whole, fraction = ""] = String(value).split(".");
    const negative = whole.startsWith("-");
    const units = BigInt(whole.replace("-", "") + fraction.padEnd(scale, "0"));
    total += negative ? -units : units;
  }
  const negative = total < 0n;
  const digits = (negative ? -total : total).toString().padStart(scale + 1, "0");
  const text = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return (negative ? "-" : "") + text;
}

/** The month "YYYY-MM" of a Date (UTC) and its first and last days as YYYY-MM-DD. */
export function currentMonth() {
  return new Date().toISOString().slice(0, 7);
}

export function monthRange(month) {
  const [year, mon] = month.split("-").map(Number);
  const last = new Date(Date.UTC(year, mon, 0)).getUTCDate();
  return { start: `${month}-01`, end: `${month}-${String(last).padStart(2, "0")}`, days: last };
}

export function monthLabel(month) {
  const [year, mon] = month.split("-").map(Number);
  return new Date(Date.UTC(year, mon - 1, 1)).toLocaleString("en-US", { month: "long", year: "numeric", timeZone: "UTC" });
}

// ---------------------------------------------------------------------------------------
// Building blocks

/** A table: columns [{label, value: row => text|node, numeric}], with an optional footer row. */
export function table({ caption, columns, rows, footer, className = "" }) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.numeric ? "num" : null }, c.label))));
  const body = h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c, i) => {
    const cell = c.value(row);
    const attrs = { class: c.numeric ? "num" : null };
    return i === 0 && c.header !== false ? h("th", { scope: "row", ...attrs }, cell) : h("td", attrs, cell);
  }))));
  const foot = footer ? h("tfoot", {}, footer.map((cells) => h("tr", {}, cells.map((cell, i) => {
    const numeric = columns[i] && columns[i].numeric;
    return i === 0 ? h("th", { scope: "row" }, cell) : h("td", { class: numeric ? "num" : null }, cell);
  })))) : null;
  return h("div.table-wrap", {}, h(`table${className ? `.${className}` : ""}`, {},
    caption ? h("caption", {}, caption) : null, head, body, foot));
}

export function section(title, ...children) {
  const id = uid("section");
  return h("section.card", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export const loading = (what) => h("p.state.loading", { role: "status" }, `Loading ${what}…`);

export function empty(message, hint) {
  return h("div.state.empty", {}, h("p", {}, message), hint ? h("p.muted", {}, hint) : null);
}

export function errorState(error, what) {
  return h("div.state.error", { role: "alert" }, h("p", {}, `Could not load ${what}.`), h("p.muted", {}, error.message));
}

export function notAvailable(what) {
  return h("div.state.unavailable", {}, h("p", {}, `${what}: not available on this deployment yet.`),
    h("p.muted", {}, "The API does not offer this endpoint yet; the console shows it as soon as it does."));
}

export function badge(text, kind = text) {
  return h(`span.badge.badge-${String(kind).replace(/[^a-z0-9_-]/gi, "")}`, {}, text);
}

export function field(label, input, hint) {
  const id = input.id || uid("field");
  input.id = id;
  const hintNode = hint ? h("span.muted.small", { id: `${id}-hint` }, hint) : null;
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  return h("div.field", {}, h("label", { for: id }, label), input, hintNode);
}

export function checkbox(label, attrs = {}) {
  const id = uid("check");
  return h("div.check", {}, h("input", { type: "checkbox", id, ...attrs }), h("label", { for: id }, label));
}

/** A definition list of [term, value] pairs. */
export function facts(pairs) {
  return h("dl.facts", {}, pairs.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))));
}
