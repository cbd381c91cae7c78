"""The projector (``maas projections repair``, the local stack's process; ProjectorFunction in
AWS) on a real durable redis-server and the local DynamoDB: an admin change committed to
DynamoDB whose Redis projection failed (Redis killed right after the commit) answers 503 and
stays marked; the projector then makes Redis say what DynamoDB says and clears the mark; a
retry with the same Idempotency-Key returns the first answer and changes nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.dynamo import Outbox
from gateway.adapters.redis_store import tenant_key
from gateway.domain.admission import Ticket, Verdict
from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import load_catalog
from gateway.domain.scopes import Scope
from gateway.errors import ServiceUnavailableError
from gateway.models.api import CreateKey, CreateTenant
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.calls import Call
from gateway.wiring import Container
from infra.local.services import ROOT, Service, create_table, free_port, redis_service
from tests.conftest import make_settings


class KillsRedisAfterCommit:
    """The real DynamoDB client; once armed, the next transaction commits and then Redis dies
    (SIGKILL), before the billing service can project the change: the window the projector closes."""

    def __init__(self, client: Any, redis: Service) -> None:
        self._client = client
        self._redis = redis
        self.armed = False

    def transact_write_items(self, **kwargs: Any) -> Any:
        answer = self._client.transact_write_items(**kwargs)
        if self.armed:
            self.armed = False
            self._redis.kill()
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[Service]:
    service = redis_service(free_port(), tmp_path / "redis", tmp_path, durable=True).start()
    yield service
    service.stop()


@pytest.fixture
def world(durable_redis: Service, dynamodb_endpoint: str):  # type: ignore[no-untyped-def]
    settings = make_settings(f"redis://127.0.0.1:{durable_redis.port}/0", dynamodb_endpoint)
    plain = Container(settings)
    create_table(plain.dynamodb, settings.table_name)
    catalog = load_catalog()
    for plan in catalog.plans:
        plain.accounts.put_plan(plan, catalog.version)
    faults = KillsRedisAfterCommit(plain.dynamodb, durable_redis)
    container = Container(settings, dynamodb=faults)
    operators = TenantRecord(id="ten_operators", name="operators", plan="internal", created_at=rfc3339(utcnow()))
    container.accounts.create_tenant(operators)
    issued = new_key()
    container.accounts.create_key(KeyRecord(id=issued.key_id, tenant_id=operators.id, scopes=[Scope.ADMIN.value],
                                            key_hash=hash_key(issued.plaintext, container.pepper),
                                            created_at=rfc3339(utcnow())))
    admin = container.authenticator.authenticate(issued.plaintext, Scope.ADMIN, fresh=True)
    return container, faults, admin, durable_redis


def call(admin, idempotency_key: str | None = None) -> Call:  # type: ignore[no-untyped-def]
    return Call(admin, uuid.uuid4().hex, idempotency_key)


def projector(container: Container, *extra: str) -> subprocess.Popen:
    """``maas projections repair`` as its own process, configured as the local stack's is."""
    env = {**container.settings.to_env(), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "projections", "repair", *extra], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def admission(container: Container, tenant_id: str, key_id: str) -> Verdict:
    limits = container.limits.for_tenant(container.accounts.get_tenant(tenant_id, consistent=True))
    ticket = Ticket(tenant_id=tenant_id, key_id=key_id, key_expires_ms=0, limits=limits, tokens=1,
                    request_id=uuid.uuid4().hex, month=datetime.now(UTC).strftime("%Y-%m"))
    decision = container.limiter.admit(ticket)
    container.limiter.settle(ticket, decision, charge=False)
    return decision.verdict


def audit_actions(container: Container, target: str) -> list[str]:
    page = container.audit.list(cursor=None, limit=100)
    return [str(item["action"]) for item in page.items if item["target"] == target]


def test_a_revocation_redis_missed_is_projected_by_the_projector(world):
    container, faults, admin, redis = world
    billing = container.billing
    tenant = billing.create_tenant(CreateTenant(name="acme", plan="starter"), call(admin))
    key = billing.create_key(tenant["id"], CreateKey(name="ci"), call(admin))
    assert admission(container, tenant["id"], key["id"]) is Verdict.OK

    # GIVEN a revocation whose commit is followed at once by Redis's death
    faults.armed = True
    with pytest.raises(ServiceUnavailableError) as answered:
        billing.revoke_key(key["id"], call(admin))
    assert answered.value.headers["Retry-After"] == "1"
    # THEN DynamoDB has the whole change (record and audit entry) and its mark
    assert container.accounts.get_key(key["id"], consistent=True).revoked_at is not None
    assert audit_actions(container, key["id"]) == ["key.revoke", "key.create"]
    assert Outbox(container.table).pending() == [(tenant["id"], Outbox(container.table).pending()[0][1])]
    # AND Redis, back with everything it had acknowledged, still lets the key in
    redis.start()
    assert admission(container, tenant["id"], key["id"]) is Verdict.OK

    # WHEN the projector runs
    run = projector(container)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    assert json.loads(output.strip().splitlines()[-1]) == {"repaired": 1, "pending": 0}
    # THEN Redis says what DynamoDB says, and the mark is gone
    assert admission(container, tenant["id"], key["id"]) is Verdict.KEY_REVOKED
    assert Outbox(container.table).pending() == []


def test_the_projector_loop_waits_out_a_redis_outage(world):
    container, faults, admin, redis = world
    billing = container.billing
    faults.armed = True
    # GIVEN a tenant created in DynamoDB while Redis died right after the commit
    with pytest.raises(ServiceUnavailableError):
        billing.create_tenant(CreateTenant(name="during the outage", plan="starter"), call(admin, "create-1"))
    [(tenant_id, _)] = Outbox(container.table).pending()
    # AND the projector loop running while Redis is still down
    loop = projector(container, "--loop", "0.2")
    try:
        time.sleep(1.5)
        assert loop.poll() is None, loop.communicate()[0]  # an outage is waited out, not a crash
        # WHEN Redis comes back (its data kept) THEN the loop projects the tenant and clears the mark
        redis.start()
        deadline = time.monotonic() + 30
        while Outbox(container.table).pending():
            assert time.monotonic() < deadline, "the projector did not repair the tenant"
            time.sleep(0.2)
        assert container.limiter.client.exists(tenant_key(tenant_id, "cfg")) == 1
        # AND the client's retry with the same Idempotency-Key gets the first answer, changing nothing
        again = billing.create_tenant(CreateTenant(name="during the outage", plan="starter"), call(admin, "create-1"))
        assert again["id"] == tenant_id
        tenants = [t for t in container.accounts.list_tenants(cursor=None, limit=100)[0]
                   if t.name == "during the outage"]
        assert [t.id for t in tenants] == [tenant_id]
        assert audit_actions(container, tenant_id) == ["tenant.create"]
    finally:
        loop.terminate()
        output, _ = loop.communicate(timeout=30)
    assert "Traceback" not in output, output
