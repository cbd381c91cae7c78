"""What admission and metering do when Redis goes away: real redis-server killed and
restarted, real inference server, moto's DynamoDB."""

from __future__ import annotations

import uuid

import pytest

from gateway.adapters.dynamo import UsageLedger
from gateway.errors import ServiceUnavailableError
from gateway.models.api import EmbeddingsRequest
from gateway.wiring import Container
from infra.local.services import create_table
from tests.conftest import make_settings
from tests.integration.conftest import make_principal


def wired(own_redis, dynamodb_endpoint, inference_url, **overrides) -> Container:
    from gateway.domain.plans import load_catalog

    c = Container(make_settings(f"redis://127.0.0.1:{own_redis.port}/0", dynamodb_endpoint,
                                inference_url=inference_url, **overrides))
    create_table(c.dynamodb, c.settings.table_name)
    catalog = load_catalog()
    for plan in catalog.plans:
        c.accounts.put_plan(plan, catalog.version)
    return c


def request(text: str = "hello world") -> EmbeddingsRequest:
    return EmbeddingsRequest(model="all-MiniLM-L6-v2", input=text)


def ledger(usage: UsageLedger, tenant_id: str) -> list[dict]:
    return list(usage.ledger_all(tenant_id, "2000-01-01", "2100-01-01"))


def test_fail_closed_by_default_then_recovers_without_restart(own_redis, dynamodb_endpoint, inference_url):
    c = wired(own_redis, dynamodb_endpoint, inference_url)
    caller, _ = make_principal(c)
    service = c.embeddings
    assert service.create(request(), caller, uuid.uuid4().hex).prompt_tokens == 4
    # This redis-server keeps nothing on disk; MemoryDB does. Flush before pulling the plug.
    c.flusher.flush([caller.tenant.id])

    own_redis.kill()
    with pytest.raises(ServiceUnavailableError) as refused:
        service.create(request(), caller, uuid.uuid4().hex)
    assert refused.value.headers["Retry-After"] == "1"

    own_redis.start()  # same port, empty: the client reconnects by itself
    result = service.create(request(), caller, uuid.uuid4().hex)
    assert result.prompt_tokens == 4 and result.decision.admitted and not result.decision.local
    for _ in range(3):  # the flusher's next runs find the restarted, empty Redis
        if not c.flusher.flush([caller.tenant.id]).errors:
            break
    assert len(ledger(c.usage, caller.tenant.id)) == 2  # the refused request is not charged


def test_fail_open_uses_the_local_limiter_and_meters_straight_to_dynamodb(own_redis, dynamodb_endpoint,
                                                                         inference_url):
    from gateway.domain.plans import LimitOverrides

    c = wired(own_redis, dynamodb_endpoint, inference_url, quota_on_redis_failure="open")
    caller, _ = make_principal(c, overrides=LimitOverrides(requests_per_minute=3))
    own_redis.kill()
    outcomes = []
    for _ in range(5):
        try:
            c.embeddings.create(request(), caller, uuid.uuid4().hex)
            outcomes.append(200)
        except Exception as error:  # noqa: BLE001 - the status is what we assert
            outcomes.append(getattr(error, "status", 500))
    assert outcomes == [200, 200, 200, 429, 429]  # the plan's rate, held in-process
    rows = ledger(c.usage, caller.tenant.id)
    assert len(rows) == 3 and sum(int(r["prompt_tokens"]) for r in rows) == 12


class KillsRedisMidRequest:
    """The real inference client, but Redis dies while the model runs (between admit and settle)."""

    def __init__(self, inner, redis_service) -> None:
        self.inner, self.redis_service = inner, redis_service

    def embed(self, input_ids, *, tenant_id, timeout_s, model=None):
        result = self.inner.embed(input_ids, tenant_id=tenant_id, timeout_s=timeout_s)
        self.redis_service.kill()
        return result

    def ready(self) -> bool:
        return self.inner.ready()


def test_redis_lost_during_settle_charges_once_through_dynamodb(own_redis, dynamodb_endpoint, inference_url):
    c = wired(own_redis, dynamodb_endpoint, inference_url)
    caller, _ = make_principal(c)
    c.embeddings.inference = KillsRedisMidRequest(c.inference, own_redis)
    request_id = uuid.uuid4().hex
    result = c.embeddings.create(request("settle without redis"), caller, request_id)
    rows = ledger(c.usage, caller.tenant.id)
    assert [r["request_id"] for r in rows] == [request_id]
    assert int(rows[0]["prompt_tokens"]) == result.prompt_tokens
