// For a key whose scopes open no view (e.g. inference only): what it can do, and how.

import { h, section } from "../dom.js";

export async function renderOverview(container, { me }) {
  container.append(
    h("div.view-head", {}, h("div", {}, h("h1", { tabindex: "-1" }, "This key"),
      h("p.muted", {}, `Signed in for ${me.tenant_name || me.tenant_id}.`))),
    section("What this key can do",
      h("p", {}, `Its scopes are: ${me.scopes.join(", ") || "none"}. It can call the embeddings API `
        + "(POST /v1/embeddings), but none of the console's views: usage needs the usage:read scope, reports "
        + "need finance, and managing tenants needs admin."),
      h("p.muted", {}, "Ask an administrator for a key with the usage:read scope to see this tenant's usage here.")));
}
