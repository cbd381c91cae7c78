"""The billing service on real redis and moto's DynamoDB: tenants, keys, rotation, revocation,
suspension, pagination, audit, and what admission sees after each change."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.admission import Ticket, Verdict
from gateway.domain.keys import hash_key, new_key
from gateway.domain.scopes import Scope
from gateway.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from gateway.models.api import CreateKey, CreateTenant, RotateKey, UpdateTenant
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.calls import Call


@pytest.fixture
def admin(container):
    """An admin principal on an operators tenant, as `maas admin bootstrap` makes one."""
    tenant = TenantRecord(id="ten_operators", name="operators", plan="internal", created_at=rfc3339(utcnow()))
    container.accounts.create_tenant(tenant)
    parsed = new_key()
    container.accounts.create_key(KeyRecord(id=parsed.key_id, tenant_id=tenant.id, scopes=[Scope.ADMIN.value],
                                         key_hash=hash_key(parsed.plaintext, container.pepper),
                                         created_at=rfc3339(utcnow())))
    return container.authenticator.authenticate(parsed.plaintext, Scope.ADMIN, fresh=True)


def rid() -> str:
    return uuid.uuid4().hex


def admit(container, key_plaintext: str):
    """Authenticate on the hot path and run admission, as /v1/embeddings does."""
    principal = container.authenticator.authenticate(key_plaintext, Scope.INFERENCE, fresh=False)
    limits = container.limits.for_tenant(principal.tenant)
    ticket = Ticket(tenant_id=principal.tenant.id, key_id=principal.key.id,
                    key_expires_ms=principal.key.expires_ms(), limits=limits, tokens=1, request_id=rid(),
                    month=datetime.now(UTC).strftime("%Y-%m"))
    decision = container.limiter.admit(ticket)
    if decision.verdict is Verdict.UNSEEDED:
        container.seeder.seed(principal.tenant.id)
        decision = container.limiter.admit(ticket)
    container.limiter.settle(ticket, decision, charge=False)
    return decision.verdict


def test_tenant_lifecycle_and_limit_overrides(container, admin):
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, rid()))
    assert tenant["status"] == "active" and tenant["plan"] == "starter"
    assert tenant["limits"]["requests_per_minute"] == 600
    assert set(tenant) >= {"id", "name", "plan", "status", "limits", "created_at"}

    patched = billing.update_tenant(tenant["id"], UpdateTenant.model_validate(
        {"plan": "pro", "limits": {"monthly_tokens": 5000, "requests_per_minute": 7}}), Call(admin, rid()))
    assert patched["plan"] == "pro"
    assert patched["limits"]["monthly_tokens"] == 5000 and patched["limits"]["requests_per_minute"] == 7
    assert patched["limits"]["tokens_per_minute"] == 2_000_000  # pro's own

    # GIVEN two overrides WHEN one is sent as null THEN only that one goes back to the plan's value
    reset = billing.update_tenant(tenant["id"], UpdateTenant.model_validate({"limits": {"monthly_tokens": None}}),
                                  Call(admin, rid()))
    assert reset["limits"]["monthly_tokens"] == 2_000_000_000
    assert reset["limit_overrides"] == {"requests_per_minute": 7}

    with pytest.raises(InvalidRequestError):
        billing.update_tenant(tenant["id"], UpdateTenant(plan="nope"), Call(admin, rid()))
    with pytest.raises(NotFoundError):
        billing.update_tenant("ten_missing", UpdateTenant(status="suspended"), Call(admin, rid()))
    with pytest.raises(InvalidRequestError):
        billing.update_tenant(admin.tenant.id, UpdateTenant(status="suspended"), Call(admin, rid()))


def test_tenants_and_keys_paginate_with_next_cursor(container, admin):
    billing = container.billing
    ids = {billing.create_tenant(CreateTenant(name=f"t{i}", plan="free"), Call(admin, rid()))["id"] for i in range(5)}
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = billing.list_tenants(cursor, 2)
        seen += [t["id"] for t in page]
        pages += 1
        if not cursor:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen)) and pages >= 3

    tenant_id = sorted(ids)[0]
    for i in range(3):
        billing.create_key(tenant_id, CreateKey(name=f"k{i}"), Call(admin, rid()))
    first, cursor = billing.list_keys(tenant_id, None, 2)
    rest, last = billing.list_keys(tenant_id, cursor, 2)
    assert len(first) == 2 and len(rest) == 1 and last is None
    assert all("key" not in k and "key_hash" not in k for k in first + rest)

    # A cursor of another listing, or one DynamoDB cannot follow, is a 400.
    forged = base64.urlsafe_b64encode(json.dumps({"gsi1pk": "TENANTS", "x": "y"}).encode()).decode()
    for bad in (cursor, forged, "!!!", "e30"):
        with pytest.raises(InvalidRequestError):
            billing.list_tenants(bad, 2)


def test_created_key_authenticates_with_its_scopes_and_expiry(container, admin):
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, rid()))
    expires = datetime.now(UTC) + timedelta(hours=1)
    issued = billing.create_key(tenant["id"], CreateKey.model_validate(
        {"name": "ci", "scopes": ["usage:read"], "expires_at": expires.isoformat()}), Call(admin, rid()))
    assert issued["key"].startswith("maas_") and issued["scopes"] == ["usage:read"]
    assert issued["expires_at"] == rfc3339(expires)
    principal = container.authenticator.authenticate(issued["key"], Scope.USAGE_READ, fresh=True)
    assert principal.tenant.id == tenant["id"]
    with pytest.raises(PermissionDeniedError):
        container.authenticator.authenticate(issued["key"], Scope.INFERENCE, fresh=True)
    # the stored record holds a keyed hash only
    record = container.accounts.get_key(issued["id"], consistent=True)
    assert issued["key"] not in record.model_dump_json()


def test_revocation_is_seen_by_admission_at_once(container, admin):
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, rid()))
    issued = billing.create_key(tenant["id"], CreateKey(), Call(admin, rid()))
    assert admit(container, issued["key"]) is Verdict.OK  # the hot path caches the key record now
    billing.revoke_key(issued["id"], Call(admin, rid()))
    assert admit(container, issued["key"]) is Verdict.KEY_REVOKED
    with pytest.raises(AuthenticationError):
        container.authenticator.authenticate(issued["key"], Scope.USAGE_READ, fresh=True)
    billing.revoke_key(issued["id"], Call(admin, rid()))  # idempotent
    listed, _ = billing.list_keys(tenant["id"], None, 10)
    assert listed[0]["status"] == "revoked"
    with pytest.raises(NotFoundError):
        billing.revoke_key("key_0000000000000000", Call(admin, rid()))


def test_rotation_keeps_the_tenant_and_gives_the_old_key_a_grace(container, admin):
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, rid()))
    old = billing.create_key(tenant["id"], CreateKey(name="svc", scopes=[Scope.INFERENCE]), Call(admin, rid()))
    assert admit(container, old["key"]) is Verdict.OK

    new = billing.rotate_key(old["id"], RotateKey(grace_seconds=3600), Call(admin, rid()))
    assert new["id"] != old["id"] and new["tenant_id"] == tenant["id"]
    assert new["name"] == "svc" and new["scopes"] == ["inference"]
    assert admit(container, old["key"]) is Verdict.OK  # within the grace
    assert admit(container, new["key"]) is Verdict.OK

    newest = billing.rotate_key(new["id"], RotateKey(grace_seconds=0), Call(admin, rid()))
    assert admit(container, new["key"]) in (Verdict.KEY_REVOKED, Verdict.KEY_EXPIRED)  # no grace: gone now
    assert admit(container, newest["key"]) is Verdict.OK
    with pytest.raises(InvalidRequestError):
        billing.rotate_key(new["id"], RotateKey(), Call(admin, rid()))  # an inactive key is not rotated


def test_concurrent_revoke_and_rotate_never_lose_the_revocation(container, admin):
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, rid()))
    for _ in range(4):
        key = billing.create_key(tenant["id"], CreateKey(), Call(admin, rid()))
        assert admit(container, key["key"]) is Verdict.OK
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def revoke(key_id=key["id"], barrier=barrier):
            barrier.wait()
            billing.revoke_key(key_id, Call(admin, rid()))

        def rotate(key_id=key["id"], barrier=barrier, outcome=outcome):
            barrier.wait()
            try:
                outcome["new"] = billing.rotate_key(key_id, RotateKey(grace_seconds=3600), Call(admin, rid()))
            except (ConflictError, InvalidRequestError) as error:
                outcome["error"] = error

        threads = [threading.Thread(target=revoke), threading.Thread(target=rotate)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # THEN the revoked key is refused by admission whatever order the two landed in
        assert container.accounts.get_key(key["id"], consistent=True).revoked_at is not None
        assert admit(container, key["key"]) is Verdict.KEY_REVOKED


def test_suspension_and_reactivation_reach_admission(container, admin):
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, rid()))
    key = billing.create_key(tenant["id"], CreateKey(), Call(admin, rid()))
    assert admit(container, key["key"]) is Verdict.OK
    billing.update_tenant(tenant["id"], UpdateTenant(status="suspended"), Call(admin, rid()))
    assert admit(container, key["key"]) is Verdict.SUSPENDED
    billing.update_tenant(tenant["id"], UpdateTenant(status="active"), Call(admin, rid()))
    assert admit(container, key["key"]) is Verdict.OK


def test_every_admin_action_is_audited_newest_first(container, admin):
    billing = container.billing
    request_ids = [rid() for _ in range(5)]
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), Call(admin, request_ids[0]))
    billing.update_tenant(tenant["id"], UpdateTenant(status="suspended"), Call(admin, request_ids[1]))
    key = billing.create_key(tenant["id"], CreateKey(), Call(admin, request_ids[2]))
    new = billing.rotate_key(key["id"], RotateKey(grace_seconds=60), Call(admin, request_ids[3]))
    billing.revoke_key(new["id"], Call(admin, request_ids[4]))

    entries, _ = billing.list_audit(None, 100)
    assert [e["action"] for e in entries[:5]] == ["key.revoke", "key.rotate", "key.create", "tenant.update",
                                                  "tenant.create"]
    assert [e["request_id"] for e in entries[:5]] == request_ids[::-1]
    assert [e["target"] for e in entries[:5]] == [new["id"], key["id"], key["id"], tenant["id"], tenant["id"]]
    for entry in entries[:5]:
        assert entry["actor_key_id"] == admin.key.id and entry["timestamp"].endswith("Z")
    # no secret is ever written to the audit log
    dumped = json.dumps(entries, default=str)
    assert key["key"] not in dumped and new["key"] not in dumped

    page, cursor = billing.list_audit(None, 2)
    more, _ = billing.list_audit(cursor, 2)
    assert len(page) == 2 and cursor and more[0]["id"] not in {e["id"] for e in page}
