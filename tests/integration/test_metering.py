"""Usage stream -> flusher -> DynamoDB ledger and rollups, on real Redis and moto's server."""

from __future__ import annotations

import time
import uuid

from gateway.adapters.redis_store import STREAM_GROUP, usage_stream
from gateway.models.records import TenantRecord, UsageEvent, rfc3339, utcnow
from gateway.services.metering import Flusher


def event(tenant_id: str, tokens: int = 5, ts_ms: int | None = None) -> UsageEvent:
    return UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant_id, key_id="key_x", model="all-MiniLM-L6-v2",
                      prompt_tokens=tokens, timestamp_ms=ts_ms or int(time.time() * 1000))


def make_tenant(container, tenant_id: str = "ten_m") -> str:
    container.store.create_tenant(TenantRecord(id=tenant_id, name="m", plan="starter", created_at=rfc3339(utcnow())))
    return tenant_id


def ledger_count(container, tenant_id: str) -> int:
    return sum(1 for _ in container.store.ledger_all(tenant_id, "2000-01-01", "2100-01-01"))


def rollup_totals(container, tenant_id: str) -> tuple[int, int]:
    rows = container.store.rollups(tenant_id, "2000-01-01", "2100-01-01")
    return sum(int(r["requests"]) for r in rows), sum(int(r["prompt_tokens"]) for r in rows)


def test_record_usage_is_idempotent_per_request(container):
    tenant = make_tenant(container)
    events = [event(tenant, tokens=i + 1) for i in range(150)]  # more than one transaction
    assert container.store.record_usage(events) == 150
    assert container.store.record_usage(events[:10] + [event(tenant, tokens=1000)]) == 1
    assert ledger_count(container, tenant) == 151
    assert rollup_totals(container, tenant) == (151, sum(range(1, 151)) + 1000)


def test_flusher_drains_streams_exactly_once(container):
    tenant = make_tenant(container)
    redis_client = container.redis
    events = [event(tenant) for _ in range(30)]
    for e in events:
        redis_client.xadd(usage_stream(tenant), e.to_fields())
    flusher = Flusher(redis_client=redis_client, store=container.store, batch_size=7)
    result = flusher.flush([tenant])
    assert (result.read, result.written, result.errors) == (30, 30, [])
    assert redis_client.xlen(usage_stream(tenant)) == 0
    assert flusher.flush([tenant]).read == 0
    assert rollup_totals(container, tenant) == (30, 150)


def test_entries_of_a_crashed_flusher_are_reclaimed_and_not_double_counted(container):
    tenant = make_tenant(container)
    redis_client = container.redis
    stream = usage_stream(tenant)
    events = [event(tenant) for _ in range(10)]
    for e in events:
        redis_client.xadd(stream, e.to_fields())
    # A flusher read 10 entries, committed 4 of them, then died before acknowledging.
    redis_client.xgroup_create(stream, STREAM_GROUP, id="0", mkstream=True)
    redis_client.xreadgroup(STREAM_GROUP, "crashed", {stream: ">"}, count=10)
    container.store.record_usage(events[:4])
    survivor = Flusher(redis_client=redis_client, store=container.store, claim_idle_ms=0)
    result = survivor.flush([tenant])
    assert result.read == 10 and result.written == 6
    assert ledger_count(container, tenant) == 10
    assert rollup_totals(container, tenant) == (10, 50)
    assert redis_client.xpending(stream, STREAM_GROUP)["pending"] == 0
