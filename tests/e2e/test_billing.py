"""The billing API (CONTRACT §5) and the admin CLI, through HTTP on the running local stack."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway import cli
from tests.e2e.conftest import Api

MODEL = "all-MiniLM-L6-v2"
ERROR_FIELDS = {"message", "type", "param", "code"}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    assert response.headers["x-request-id"]
    return body["error"]


def new_tenant(admin: Api, plan: str = "starter", name: str = "acme") -> dict:
    response = admin.post("/billing/tenants", json={"name": name, "plan": plan})
    assert response.status_code == 201, response.text
    return response.json()


def new_key(admin: Api, tenant_id: str, **body) -> dict:
    response = admin.post(f"/billing/tenants/{tenant_id}/keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def embed(stack, key: str) -> int:
    return Api(stack.api_url, key).post("/v1/embeddings", json={"model": MODEL, "input": "a"}).status_code


def test_plans_list_limits_and_prices(admin):
    response = admin.get("/billing/plans")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and "next_cursor" not in body
    plans = {plan["id"]: plan for plan in body["data"]}
    assert {"free", "starter", "pro"} <= set(plans)
    assert plans["starter"]["limits"] == {"requests_per_minute": 600, "tokens_per_minute": 150000,
                                          "monthly_tokens": 100000000, "max_concurrent_requests": 16,
                                          "max_request_tokens": 65536}
    assert plans["starter"]["price_per_1k_tokens"][MODEL] == "0.0050"


def test_tenant_create_get_patch_and_paginated_list(admin):
    tenant = new_tenant(admin)
    assert {"id", "name", "plan", "status", "limits", "created_at"} <= set(tenant)
    assert tenant["status"] == "active" and tenant["name"] == "acme"
    assert admin.get(f"/billing/tenants/{tenant['id']}").json() == tenant

    patched = admin.patch(f"/billing/tenants/{tenant['id']}",
                          json={"plan": "pro", "limits": {"requests_per_minute": 42}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["plan"] == "pro" and patched.json()["limits"]["requests_per_minute"] == 42
    assert patched.json()["limits"]["tokens_per_minute"] == 2000000

    for _ in range(2):
        new_tenant(admin, name="more")
    seen, params = [], {"limit": 2}
    while True:
        page = admin.get("/billing/tenants", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["object"] == "list" and len(body["data"]) <= 2
        seen += [t["id"] for t in body["data"]]
        if "next_cursor" not in body:
            break
        assert isinstance(body["next_cursor"], str) and body["next_cursor"]
        params = {"limit": 2, "cursor": body["next_cursor"]}
    assert tenant["id"] in seen and len(seen) == len(set(seen)) >= 4


def test_unknown_tenant_and_key_are_404(admin):
    for path in ("/billing/tenants/ten_0000000000000000", "/billing/tenants/ten_0000000000000000/keys",
                 "/billing/tenants/nonsense%20id", "/billing/tenants/" + "x" * 3000):
        assert error_of(admin.get(path), 404)["code"] == "tenant_not_found"
    assert error_of(admin.patch("/billing/tenants/ten_0000000000000000", json={"status": "active"}), 404)
    assert error_of(admin.post("/billing/tenants/ten_0000000000000000/keys", json={}), 404)
    for key_id in ("key_0000000000000000", "not-a-key"):
        assert error_of(admin.delete(f"/billing/keys/{key_id}"), 404)["code"] == "key_not_found"
        assert error_of(admin.post(f"/billing/keys/{key_id}/rotate", json={}), 404)["code"] == "key_not_found"


def test_key_create_list_without_secrets_and_revoke(stack, admin):
    tenant = new_tenant(admin)
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    issued = new_key(admin, tenant["id"], name="ci", scopes=["inference"], expires_at=expires.isoformat())
    assert {"id", "key", "scopes", "created_at", "expires_at"} <= set(issued)
    assert issued["scopes"] == ["inference"]
    assert datetime.fromisoformat(issued["expires_at"]) == expires
    default = new_key(admin, tenant["id"])
    assert default["scopes"] == ["inference", "usage:read"] and default["expires_at"] is None

    listed = admin.get(f"/billing/tenants/{tenant['id']}/keys")
    assert listed.status_code == 200
    assert {k["id"] for k in listed.json()["data"]} == {issued["id"], default["id"]}
    assert issued["key"] not in listed.text and default["key"] not in listed.text
    assert issued["key"][-38:-6] not in listed.text  # nor the secret part
    assert all("key" not in k and "key_hash" not in k for k in listed.json()["data"])

    assert embed(stack, issued["key"]) == 200
    revoked = admin.delete(f"/billing/keys/{issued['id']}")
    assert revoked.status_code == 204 and not revoked.content
    assert error_of(Api(stack.api_url, issued["key"]).post("/v1/embeddings", json={"model": MODEL, "input": "a"}),
                    401)
    assert admin.delete(f"/billing/keys/{issued['id']}").status_code == 204  # idempotent
    statuses = {k["id"]: k["status"] for k in admin.get(f"/billing/tenants/{tenant['id']}/keys").json()["data"]}
    assert statuses == {issued["id"]: "revoked", default["id"]: "active"}


def test_rotation_with_grace_keeps_tenant_limits_and_usage(stack, admin):
    tenant = new_tenant(admin)
    admin.patch(f"/billing/tenants/{tenant['id']}", json={"limits": {"requests_per_minute": 500}})
    old = new_key(admin, tenant["id"], name="svc")
    assert embed(stack, old["key"]) == 200

    rotated = admin.post(f"/billing/keys/{old['id']}/rotate", json={"grace_seconds": 2})
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["id"] != old["id"] and new["key"] != old["key"] and new["tenant_id"] == tenant["id"]
    assert new["scopes"] == old["scopes"] and new["name"] == "svc"
    assert embed(stack, old["key"]) == 200  # within the grace
    response = Api(stack.api_url, new["key"]).post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert response.status_code == 200
    assert response.headers["RateLimit-Policy"].startswith('"requests";q=500;')  # the tenant's limits

    time.sleep(2.2)
    assert embed(stack, old["key"]) == 401  # the grace is over
    assert embed(stack, new["key"]) == 200
    # usage history stays the tenant's: both keys' requests in one usage report
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = admin.get("/billing/usage", params={"start": today, "end": today, "tenant_id": tenant["id"]})
        if sum(r["requests"] for r in rows.json()["data"]) == 4:
            break
        time.sleep(0.25)
    assert sum(r["requests"] for r in rows.json()["data"]) == 4
    assert error_of(admin.post(f"/billing/keys/{old['id']}/rotate", json={}), 400)["code"] == "key_inactive"


def test_suspension_is_403_and_reactivation_restores(stack, admin):
    tenant = new_tenant(admin)
    key = new_key(admin, tenant["id"])
    assert embed(stack, key["key"]) == 200
    assert admin.patch(f"/billing/tenants/{tenant['id']}", json={"status": "suspended"}).json()["status"] == "suspended"
    response = Api(stack.api_url, key["key"]).post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert error_of(response, 403)["code"] == "tenant_suspended"
    assert error_of(Api(stack.api_url, key["key"]).get("/v1/usage", params={"start": "2026-01-01",
                                                                             "end": "2026-01-02"}), 403)
    admin.patch(f"/billing/tenants/{tenant['id']}", json={"status": "active"})
    assert embed(stack, key["key"]) == 200


@pytest.mark.parametrize("scopes", [["inference"], ["usage:read"], ["finance"], ["inference", "usage:read",
                                                                                  "finance"]])
def test_every_billing_route_needs_admin_before_the_body(stack, admin, scopes):
    tenant = new_tenant(admin)
    key = new_key(admin, tenant["id"], scopes=scopes)
    api = Api(stack.api_url, key["key"])
    calls = [("get", "/billing/plans"), ("get", "/billing/tenants"), ("post", "/billing/tenants"),
             ("get", f"/billing/tenants/{tenant['id']}"), ("patch", f"/billing/tenants/{tenant['id']}"),
             ("get", f"/billing/tenants/{tenant['id']}/keys"), ("post", f"/billing/tenants/{tenant['id']}/keys"),
             ("delete", f"/billing/keys/{key['id']}"), ("post", f"/billing/keys/{key['id']}/rotate"),
             ("get", "/billing/audit")]
    for method, path in calls:
        # an invalid body too: the scope is checked first
        kwargs = {"data": b"{not json", "headers": {"Content-Type": "application/json"}} if method != "get" else {}
        assert error_of(getattr(api, method)(path, **kwargs), 403)["code"] == "insufficient_scope", path
        assert error_of(getattr(Api(stack.api_url, None), method)(path, **kwargs), 401), path
    assert embed(stack, key["key"]) in (200, 403)  # the key itself was not revoked by the DELETE


def test_audit_lists_every_admin_action_with_actor_and_request_id(stack, admin):
    tenant_response = admin.post("/billing/tenants", json={"name": "audited", "plan": "free"})
    tenant = tenant_response.json()
    key_response = admin.post(f"/billing/tenants/{tenant['id']}/keys", json={})
    patch_response = admin.patch(f"/billing/tenants/{tenant['id']}", json={"limits": {"monthly_tokens": 10}})
    rotate_response = admin.post(f"/billing/keys/{key_response.json()['id']}/rotate", json={"grace_seconds": 0})
    revoke_response = admin.delete(f"/billing/keys/{rotate_response.json()['id']}")
    expected = [
        ("key.revoke", rotate_response.json()["id"], revoke_response),
        ("key.rotate", key_response.json()["id"], rotate_response),
        ("tenant.update", tenant["id"], patch_response),
        ("key.create", key_response.json()["id"], key_response),
        ("tenant.create", tenant["id"], tenant_response),
    ]
    entries = admin.get("/billing/audit", params={"limit": 50}).json()["data"]
    by_request = {e["request_id"]: e for e in entries}
    admin_key_id = "key_" + stack.admin_key[5:21]
    for action, target, response in expected:
        entry = by_request[response.headers["x-request-id"]]
        assert (entry["action"], entry["target"], entry["actor_key_id"]) == (action, target, admin_key_id)
        assert datetime.fromisoformat(entry["timestamp"]) <= datetime.now(UTC)
    page = admin.get("/billing/audit", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    assert key_response.json()["key"] not in json.dumps(entries)


# ----------------------------------------------------------------------------------- the CLI


def maas(capsys, stack, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*argv, "--url", stack.api_url, "--key", stack.admin_key])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_tenants_and_keys_end_to_end(stack, capsys):
    code, out, _ = maas(capsys, stack, "tenants", "create", "cli-co", "--plan", "free", "--json")
    assert code == 0
    tenant = json.loads(out)
    assert tenant["name"] == "cli-co" and tenant["plan"] == "free"

    code, out, _ = maas(capsys, stack, "tenants", "list")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["ID", "NAME", "PLAN", "STATUS"]
    assert tenant["id"] in out

    code, out, _ = maas(capsys, stack, "tenants", "update", tenant["id"], "--plan", "pro", "--suspend",
                        "--limit", "monthly_tokens=1234", "--json")
    updated = json.loads(out)
    assert code == 0 and updated["status"] == "suspended" and updated["limits"]["monthly_tokens"] == 1234
    code, out, _ = maas(capsys, stack, "tenants", "update", tenant["id"], "--activate", "--limit", "monthly_tokens=",
                        "--json")
    assert json.loads(out)["limits"]["monthly_tokens"] == 2000000000 and json.loads(out)["status"] == "active"
    code, out, _ = maas(capsys, stack, "tenants", "show", tenant["id"])
    assert code == 0 and "pro" in out and "active" in out

    code, out, err = maas(capsys, stack, "keys", "create", tenant["id"], "--name", "bot", "--scope", "inference")
    assert code == 0
    plaintext = out.strip().splitlines()[-1]
    assert plaintext.startswith("maas_") and "shown once" in err
    assert embed(stack, plaintext) == 200

    code, out, _ = maas(capsys, stack, "keys", "list", tenant["id"], "--json")
    keys = json.loads(out)["data"]
    assert code == 0 and len(keys) == 1 and keys[0]["name"] == "bot" and plaintext not in out

    code, out, _ = maas(capsys, stack, "keys", "rotate", keys[0]["id"], "--grace-seconds", "0", "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["key"] != plaintext and embed(stack, plaintext) == 401
    code, out, _ = maas(capsys, stack, "keys", "revoke", rotated["id"])
    assert code == 0 and rotated["id"] in out and embed(stack, rotated["key"]) == 401

    code, _, err = maas(capsys, stack, "tenants", "show", "ten_0000000000000000")
    assert code == 1 and "404" in err
    code, _, err = maas(capsys, stack, "keys", "create", tenant["id"], "--scope", "root")
    assert code == 1 and "400" in err


def test_cli_takes_url_and_key_from_the_environment(stack, capsys, monkeypatch):
    monkeypatch.setenv("MAAS_API_URL", stack.api_url)
    monkeypatch.setenv("MAAS_API_KEY", stack.admin_key)
    capsys.readouterr()
    assert cli.main(["tenants", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["object"] == "list" and any(t["id"] == "ten_operators" for t in listed["data"])
    monkeypatch.setenv("MAAS_API_KEY", stack.admin_key[:-1] + ("A" if stack.admin_key[-1] != "A" else "B"))
    assert cli.main(["tenants", "list"]) == 1
    assert "401" in capsys.readouterr().err
