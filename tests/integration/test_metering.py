"""Usage stream -> flusher -> DynamoDB ledger and rollups, on real Redis and moto's server."""

from __future__ import annotations

import time
import uuid

from gateway.adapters.redis_store import STREAM_GROUP, usage_stream
from gateway.domain.usage import UsageEvent
from gateway.models.records import TenantRecord, rfc3339, utcnow
from gateway.services.metering import Flusher


def event(tenant_id: str, tokens: int = 5, ts_ms: int | None = None) -> UsageEvent:
    return UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant_id, key_id="key_x", model="all-MiniLM-L6-v2",
                      prompt_tokens=tokens, timestamp_ms=ts_ms or int(time.time() * 1000))


def make_tenant(container, tenant_id: str = "ten_m") -> str:
    """A tenant as the billing API creates it: its record, and its (empty) state seeded in Redis."""
    container.accounts.create_tenant(TenantRecord(id=tenant_id, name="m", plan="starter", created_at=rfc3339(utcnow())))
    container.seeder.seed(tenant_id)
    return tenant_id


def ledger_count(container, tenant_id: str) -> int:
    return sum(1 for _ in container.usage.ledger_all(tenant_id, "2000-01-01", "2100-01-01"))


def rollup_totals(container, tenant_id: str) -> tuple[int, int]:
    rows = container.usage.rollups(tenant_id, "2000-01-01", "2100-01-01")
    return sum(int(r["requests"]) for r in rows), sum(int(r["prompt_tokens"]) for r in rows)


def test_record_usage_is_idempotent_per_request(container):
    tenant = make_tenant(container)
    events = [event(tenant, tokens=i + 1) for i in range(150)]  # more than one transaction
    assert container.usage.record_usage(events) == 150
    assert container.usage.record_usage(events[:10] + [event(tenant, tokens=1000)]) == 1
    assert ledger_count(container, tenant) == 151
    assert rollup_totals(container, tenant) == (151, sum(range(1, 151)) + 1000)


def test_flusher_drains_streams_exactly_once(container):
    tenant = make_tenant(container)
    redis_client = container.redis
    events = [event(tenant) for _ in range(30)]
    for e in events:
        redis_client.xadd(usage_stream(tenant), e.to_fields())
    flusher = Flusher(redis_client=redis_client, usage=container.usage, accounts=container.accounts, batch_size=7)
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
    container.usage.record_usage(events[:4])
    survivor = Flusher(redis_client=redis_client, usage=container.usage, accounts=container.accounts, claim_idle_ms=0)
    result = survivor.flush([tenant])
    assert result.read == 10 and result.written == 6
    assert ledger_count(container, tenant) == 10
    assert rollup_totals(container, tenant) == (10, 50)
    assert redis_client.xpending(stream, STREAM_GROUP)["pending"] == 0


# -- hardening: packing, bounded batches, own retries, lag, write counts -----------------------
from collections import Counter  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gateway.adapters.dynamo import pack_transactions  # noqa: E402


def cell_events(tenant: str, per_cell: list[int]) -> list[UsageEvent]:
    out = []
    for i, n in enumerate(per_cell):
        ts = 1_767_225_600_000 + (i // 2) * 86_400_000  # 2026-01-01 + days
        out += [UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant, key_id="k", model=f"m{i % 2}",
                           prompt_tokens=3, timestamp_ms=ts + j) for j in range(n)]
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=250), min_size=1, max_size=6))
def test_packing_keeps_every_event_once_and_splits_a_cell_only_when_it_must(per_cell):
    events = cell_events("t", per_cell)
    chunks = pack_transactions(events + events[:5])  # a duplicate delivery inside the batch
    flat = [e.request_id for chunk in chunks for e in chunk]
    assert sorted(flat) == sorted(e.request_id for e in events)
    appearances = Counter()
    for chunk in chunks:
        cells = {(e.tenant_id, e.date, e.model) for e in chunk}
        assert len(chunk) + len(cells) <= 100
        appearances.update(cells)
    sizes = Counter((e.tenant_id, e.date, e.model) for e in events)
    for cell, n in appearances.items():
        assert n == -(-sizes[cell] // 99)  # one rollup write per cell unless it alone exceeds 99


def count_writes(container) -> Counter:
    calls: Counter = Counter()

    def hook(params, **kwargs):
        calls[kwargs["model"].name] += 1
        for item in params.get("TransactItems", []):
            calls["rollup" if "Update" in item else "ledger"] += 1

    container.dynamodb.meta.events.register("provide-client-params.dynamodb.*", hook)
    return calls


def test_a_full_batch_of_one_cell_is_one_transaction_and_one_rollup_write(container):
    tenant = make_tenant(container)
    for e in [event(tenant, ts_ms=1_767_225_600_000 + i) for i in range(198)]:
        container.redis.xadd(usage_stream(tenant), e.to_fields())
    calls = count_writes(container)
    result = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts).flush([tenant])
    assert (result.batches, result.written, result.unflushed) == (2, 198, 0)
    assert calls["TransactWriteItems"] == 2 and calls["rollup"] == 2 and calls["ledger"] == 198


def test_batches_are_bounded_and_the_rest_waits_for_the_next_run(container):
    tenant = make_tenant(container)
    for e in [event(tenant) for _ in range(25)]:
        container.redis.xadd(usage_stream(tenant), e.to_fields())
    flusher = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts,
                      batch_size=10, max_batches_per_stream=2)
    first = flusher.flush([tenant])
    assert (first.batches, first.written, first.unflushed) == (2, 20, 5)
    second = flusher.flush([tenant])
    assert (second.written, second.unflushed, second.oldest_unflushed_age_s) == (5, 0, 0.0)


def test_lag_is_the_age_of_the_oldest_event_not_yet_in_the_ledger(container):
    tenant = make_tenant(container)
    now_ms = int(time.time() * 1000)  # the flusher's clock, frozen here: the age is exact
    old_ms = now_ms - 120_000
    container.redis.xadd(usage_stream(tenant), event(tenant, ts_ms=old_ms).to_fields(), id=f"{old_ms}-0")
    container.redis.xadd(usage_stream(tenant), event(tenant, ts_ms=now_ms - 5_000).to_fields(),
                         id=f"{now_ms - 5_000}-0")
    flusher = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts,
                      clock=lambda: now_ms / 1000)
    stalled = flusher.flush([tenant], deadline=0)  # a run out of time flushes nothing
    assert stalled.unflushed == 2 and stalled.oldest_unflushed_age_s == pytest.approx(120.0)
    done = flusher.flush([tenant])
    assert (done.written, done.unflushed, done.oldest_unflushed_age_s) == (2, 0, 0.0)


def test_duplicate_delivery_in_the_stream_is_counted_once(container):
    tenant = make_tenant(container)
    e = event(tenant, tokens=7)
    for _ in range(3):
        container.redis.xadd(usage_stream(tenant), e.to_fields())
    result = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts).flush([tenant])
    assert (result.read, result.written) == (3, 1)
    assert ledger_count(container, tenant) == 1 and rollup_totals(container, tenant) == (1, 7)


def test_a_redis_restart_that_lost_the_group_is_recovered(container):
    tenant = make_tenant(container)
    flusher = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts)
    flusher.flush([tenant])
    container.redis.delete(usage_stream(tenant))  # what a restart without persistence does
    container.redis.xadd(usage_stream(tenant), event(tenant).to_fields())
    result = flusher.flush([tenant])
    assert (result.errors, result.written) == ([], 1)


def test_streams_are_flushed_concurrently_and_counted_once(container):
    tenants = [make_tenant(container, f"ten_c{i}") for i in range(4)]
    for tenant in tenants:
        for e in [event(tenant, tokens=2) for _ in range(20)]:
            container.redis.xadd(usage_stream(tenant), e.to_fields())
    flusher = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts, concurrency=2)
    written = 0
    for _ in range(5):  # moto itself may answer 500 to concurrent transactions: retried next run
        result = flusher.flush(tenants)
        written += result.written
        if result.unflushed == 0:
            break
    assert (result.streams, written, result.unflushed, result.errors) == (4, 80, 0, [])
    assert all(rollup_totals(container, t) == (20, 40) for t in tenants)


# -- the scheduled function ------------------------------------------------------------------
import json as _json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.lambdas import configure, context_for, emf_metrics, handler_for  # noqa: E402

SCHEDULED = _json.loads((Path(__file__).resolve().parents[2] / "events/flusher/scheduled.json").read_text())


def test_the_flusher_function_drains_and_publishes_its_lag(container, monkeypatch, capsys):
    from gateway.adapters.active_tenants import ActiveTenants

    tenant = make_tenant(container)
    container.redis.xadd(usage_stream(tenant), event(tenant).to_fields())
    ActiveTenants(container.redis).mark([tenant])  # as the settle script lists it with each append
    configure(monkeypatch, container.settings)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    handler = handler_for("flusher")
    assert handler(SCHEDULED, context_for("flusher")) == {"read": 1, "written": 1, "unflushed": 0}
    seen = emf_metrics(capsys.readouterr().out)
    assert seen["FlusherLagSeconds"] == 0.0 and seen["FlushedEvents"] == 1


def test_with_redis_gone_the_function_fails_and_publishes_no_lag(container, own_redis, monkeypatch, capsys):
    make_tenant(container)
    own_redis.kill()
    configure(monkeypatch, container.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{own_redis.port}/0"}))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    handler = handler_for("flusher")
    with pytest.raises(RuntimeError):
        handler(SCHEDULED, context_for("flusher"))
    seen = emf_metrics(capsys.readouterr().out)
    assert "FlusherLagSeconds" not in seen and seen["FlusherErrors"] >= 1


def test_an_unreadable_entry_goes_to_the_dead_letter_stream_and_blocks_nothing(container):
    from gateway.adapters.tenant_streams import dead_letter_stream

    tenant = make_tenant(container)
    stream = usage_stream(tenant)
    container.redis.xadd(stream, event(tenant).to_fields())
    container.redis.xadd(stream, {"rid": "r1", "tokens": "not a number"})
    container.redis.xadd(stream, event(tenant).to_fields())
    result = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts).flush([tenant])
    assert (result.written, result.dead_lettered, result.unflushed, result.errors) == (2, 1, 0, [])
    [(_, kept)] = container.redis.xrange(dead_letter_stream(stream))
    assert kept[b"tokens"] == b"not a number" and b"_source_id" in kept


def test_all_of_its_own_failed_batches_are_retried_in_one_run(container):
    tenant = make_tenant(container)
    stream = usage_stream(tenant)
    events = [event(tenant) for _ in range(25)]
    for e in events:
        container.redis.xadd(stream, e.to_fields())
    flusher = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts, batch_size=10)
    container.redis.xgroup_create(stream, STREAM_GROUP, id="0", mkstream=True)
    # three batches read by this flusher whose writes failed: all its own pending
    for _ in range(3):
        container.redis.xreadgroup(STREAM_GROUP, flusher.consumer, {stream: ">"}, count=10)
    result = flusher.flush([tenant])
    assert (result.batches, result.written, result.unflushed) == (3, 25, 0)
