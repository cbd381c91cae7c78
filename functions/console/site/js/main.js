// The console: sign-in with an API key, then the views its scopes allow, chosen by the
// location hash (#/usage, #/tenants/ten_…); the key itself never goes into a URL.

import { ApiError, get, session } from "./api.js";
import { destroyCharts } from "./charts.js";
import { clear, h } from "./dom.js";
import { renderAudit } from "./views/audit.js";
import { renderFinance } from "./views/finance.js";
import { renderOwnKeys } from "./views/keys.js";
import { renderOverview } from "./views/overview.js";
import { renderTenants } from "./views/tenants.js";
import { renderUsage } from "./views/usage.js";
import { renderWebhooks } from "./views/webhooks.js";

const VIEWS = [
  { id: "usage", title: "Usage", scope: "usage:read", render: renderUsage },
  { id: "keys", title: "My keys", scope: "usage:read", render: renderOwnKeys },
  { id: "tenants", title: "Tenants", scope: "admin", render: renderTenants },
  { id: "finance", title: "Finance", scope: "finance", render: renderFinance },
  { id: "webhooks", title: "Webhooks", scope: "admin", render: renderWebhooks },
  { id: "audit", title: "Audit log", scope: "admin", render: renderAudit },
];
const OVERVIEW = { id: "overview", title: "Overview", scope: null, render: renderOverview };
const IMPLIED = { admin: ["finance"] };

const $ = (id) => document.getElementById(id);
let principal = null;

function scopesOf(me) {
  const held = new Set(me.scopes);
  for (const scope of me.scopes) for (const implied of IMPLIED[scope] || []) held.add(implied);
  return held;
}

function allowedViews() {
  const held = scopesOf(principal);
  const views = VIEWS.filter((view) => held.has(view.scope));
  return views.length ? views : [OVERVIEW];
}

// -------------------------------------------------------------------------------- sign-in

async function signIn(event) {
  event.preventDefault();
  const input = $("api-key");
  const error = $("sign-in-error");
  const key = input.value.trim();
  error.hidden = true;
  if (!key) {
    showSignInError("Enter an API key.");
    return;
  }
  const button = event.submitter || $("sign-in-form").querySelector("button");
  button.disabled = true;
  try {
    const me = await get("/v1/me", undefined, { key });
    session.key = key;
    input.value = "";
    start(me, { type: "signin" }); // focus moves to the first view's heading
  } catch (failure) {
    showSignInError(failure instanceof ApiError && failure.status === 401
      ? `This key was not accepted: ${failure.message}`
      : failure.message);
  } finally {
    button.disabled = false;
  }
}

function showSignInError(message) {
  const error = $("sign-in-error");
  error.textContent = message;
  error.hidden = false;
  $("api-key").focus();
}

function signOut() {
  session.clear(); // the key, and anything else this tab kept
  principal = null;
  destroyCharts();
  clear($("view"));
  clear($("nav"));
  $("who-text").textContent = "";
  $("who").hidden = true;
  $("nav").hidden = true;
  $("view").hidden = true;
  $("sign-in").hidden = false;
  history.replaceState(null, "", location.pathname + location.search);
  $("api-key").focus();
}

function start(me, cause = undefined) {
  principal = me;
  $("sign-in").hidden = true;
  $("who").hidden = false;
  $("who-text").replaceChildren(
    h("span.who-tenant", {}, me.tenant_name || me.tenant_id),
    h("span.muted", {}, ` · ${me.key_id} · ${me.scopes.join(", ")}`),
  );
  $("nav").hidden = false;
  $("view").hidden = false;
  route(cause);
}

// -------------------------------------------------------------------------------- routing

function parseHash() {
  const [id = "", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { id, arg: rest.map(decodeURIComponent).join("/") || null };
}

export function navigate(id, arg = null) {
  const hash = `#/${id}${arg ? `/${encodeURIComponent(arg)}` : ""}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

function renderNav(views, current) {
  clear($("nav"), h("ul", {}, views.map((view) => h("li", {}, h("a", {
    href: `#/${view.id}`, "aria-current": view.id === current ? "page" : null,
  }, view.title)))));
}

async function route(event) {
  if (!principal) return;
  const views = allowedViews();
  const { id, arg } = parseHash();
  const view = views.find((v) => v.id === id);
  if (!view) {
    history.replaceState(null, "", `#/${views[0].id}`);
    return route(event);
  }
  renderNav(views, view.id);
  destroyCharts();
  const container = h("div.view", { "data-view": view.id });
  clear($("view"), container);
  document.title = `${view.title} · maas-gateway console`;
  const moved = event !== undefined; // a link, the history or a sign-in; not a reload
  try {
    await view.render(container, { arg, me: principal, navigate });
    // Keyboard and screen-reader users land on the new view's heading, unless they moved on.
    const active = document.activeElement;
    if (moved && (active === document.body || $("nav").contains(active))) container.querySelector("h1")?.focus();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) {
      signOut();
      showSignInError(`Signed out: ${failure.message}`);
      return;
    }
    container.append(h("div.state.error", { role: "alert" }, h("p", {}, "Something went wrong."), h("p.muted", {}, failure.message)));
  }
}

// -------------------------------------------------------------------------------- start-up

async function boot() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  const key = session.key;
  if (!key) {
    $("api-key").focus();
    return;
  }
  try {
    start(await get("/v1/me"));
  } catch (failure) {
    signOut();
    showSignInError(failure instanceof ApiError && failure.status === 401
      ? `Please sign in again: ${failure.message}` : failure.message);
  }
}

boot();
