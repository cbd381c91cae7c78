"""The two tenant-API routes the web console reads, through HTTP on the running stack:
GET /v1/me (who a key is, any valid key) and GET /v1/keys (the tenant's own keys)."""

from __future__ import annotations

from tests.e2e.conftest import Api


def issue(admin: Api, tenant_id: str, scopes: list[str]) -> tuple[str, str]:
    created = admin.post(f"/billing/tenants/{tenant_id}/keys", json={"name": "console", "scopes": scopes})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


def test_me_names_the_key_its_tenant_and_scopes(stack, admin, tenant):
    me = Api(stack.api_url, tenant["key"]).get("/v1/me")
    assert me.status_code == 200
    assert me.json() == {"object": "principal", "key_id": tenant["key_id"], "tenant_id": tenant["id"],
                         "tenant_name": "acme", "scopes": ["inference", "usage:read"]}
    assert admin.get("/v1/me").json()["scopes"] == ["admin"]


def test_me_needs_a_valid_key_but_no_scope(stack, admin, tenant):
    # GIVEN keys with a single scope each THEN each may ask who it is
    for scope in ("inference", "usage:read", "finance"):
        _, key = issue(admin, tenant["id"], [scope])
        assert Api(stack.api_url, key).get("/v1/me").json()["scopes"] == [scope]
    # but a missing, malformed or revoked key may not
    assert Api(stack.api_url, None).get("/v1/me").status_code == 401
    assert Api(stack.api_url, "maas_not_a_key").get("/v1/me").status_code == 401
    assert admin.delete(f"/billing/keys/{tenant['key_id']}").status_code == 204
    revoked = Api(stack.api_url, tenant["key"]).get("/v1/me")
    assert revoked.status_code == 401
    assert set(revoked.json()["error"]) == {"message", "type", "param", "code"}


def test_keys_lists_the_own_tenants_keys_without_secrets(stack, admin, tenant):
    other = admin.post("/billing/tenants", json={"name": "other", "plan": "starter"}).json()
    other_key_id, _ = issue(admin, other["id"], ["inference", "usage:read"])
    second_id, _ = issue(admin, tenant["id"], ["inference"])
    listed = Api(stack.api_url, tenant["key"]).get("/v1/keys")
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    ids = {k["id"] for k in body["data"]}
    assert ids == {tenant["key_id"], second_id}
    assert other_key_id not in ids
    for key in body["data"]:
        assert key["tenant_id"] == tenant["id"]
        assert not {"key", "key_hash"} & set(key)
    # the admin's own listing of the tenant is the same view
    assert admin.get(f"/billing/tenants/{tenant['id']}/keys").json()["data"] == body["data"]


def test_keys_needs_usage_read(stack, admin, tenant):
    _, inference_only = issue(admin, tenant["id"], ["inference"])
    refused = Api(stack.api_url, inference_only).get("/v1/keys")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
