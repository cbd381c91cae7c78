"""Write-sharded ledger: one tenant's events land on several DynamoDB partitions (one per day
and shard, beside the unsharded partition that items written before the sharding stay in),
and every reader (the events API's pages, the CSV export, reconcile, the rollup reports,
seeding) returns each event once, in order. Real Redis, the real flusher, the local DynamoDB."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import date

import pytest

from gateway.adapters.dynamo import CellSums
from gateway.adapters.redis_store import usage_stream
from gateway.domain.usage import UsageEvent, ledger_shard, ledger_shards
from gateway.errors import InvalidRequestError
from gateway.models.records import TenantRecord, rfc3339, utcnow
from gateway.services.metering import Flusher
from gateway.services.reports import EVENT_COLUMNS, to_csv

DAY1_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SHARDS = 5
MODEL = "all-MiniLM-L6-v2"


def make_tenant(container, tenant_id: str) -> str:
    container.accounts.create_tenant(TenantRecord(id=tenant_id, name="hot", plan="starter",
                                                  created_at=rfc3339(utcnow())))
    container.seeder.seed(tenant_id)
    return tenant_id


def events_over_two_days(tenant_id: str, n: int, shards: int = SHARDS) -> list[UsageEvent]:
    """``n`` events a minute apart from 2026-01-01 23:00 (so they cross into the 2nd), each on
    the shard its request id gives, as the hot path stamps them."""
    out = []
    for i in range(n):
        request_id = uuid.uuid4().hex
        out.append(UsageEvent(request_id=request_id, tenant_id=tenant_id, key_id=f"key_{i % 2}", model=MODEL,
                              prompt_tokens=1 + i % 5, timestamp_ms=DAY1_MS + 23 * 3_600_000 + i * 60_000,
                              cost_nano=1000 * (1 + i % 5), ledger_shard=ledger_shard(request_id, shards)))
    return out


def unsharded(event: UsageEvent) -> UsageEvent:
    """The same request as a stream entry written before the ledger was sharded (no shard field)."""
    fields = event.to_fields()
    del fields["ls"]
    return UsageEvent.from_fields(fields)


def partitions(container, tenant_id: str) -> dict[str, int]:
    """Items per ledger partition, read straight from the table."""
    pks = [f"LEDGER#{tenant_id}"] + [f"LEDGER#{tenant_id}#{d}#{s}" for d in ("2026-01-01", "2026-01-02")
                                     for s in range(SHARDS)]
    counts = {pk: sum(1 for _ in container.table.query_all(pk=pk)) for pk in pks}
    return {pk: n for pk, n in counts.items() if n}


def in_order(events: list[UsageEvent]) -> list[str]:
    return [e.request_id for e in sorted(events, key=lambda e: (rfc3339(e.moment), e.request_id))]


def all_pages(reports, tenant_id: str, limit: int) -> list[dict]:
    rows, cursor = [], None
    while True:
        page, cursor = reports.events(tenant_id=tenant_id, start="2026-01-01", end="2026-01-31", cursor=cursor,
                                      limit=limit)
        rows += page
        if not cursor:
            return rows


@pytest.fixture
def hot(container):
    """A tenant with 120 events over 2 days and 5 shards, flushed from its stream by the flusher,
    10 of them old entries without a shard (they go to the unsharded partition)."""
    tenant_id = make_tenant(container, f"ten_hot{uuid.uuid4().hex[:6]}")
    events = events_over_two_days(tenant_id, 120)
    events[:10] = [unsharded(e) for e in events[:10]]
    pipe = container.redis.pipeline(transaction=False)
    for e in events:
        pipe.xadd(usage_stream(tenant_id), e.to_fields())
    pipe.execute()
    flusher = Flusher(redis_client=container.redis, usage=container.usage, accounts=container.accounts)
    result = flusher.flush([tenant_id])
    assert (result.written, result.errors) == (120, [])
    return tenant_id, events


def test_events_spread_over_partitions_by_day_and_shard(container, hot):
    tenant_id, events = hot
    # THEN the ledger is spread: the old entries in the unsharded partition, the rest over
    # every shard of both days, each event exactly once
    spread = partitions(container, tenant_id)
    assert spread[f"LEDGER#{tenant_id}"] == 10
    assert len(spread) == 1 + 2 * SHARDS and sum(spread.values()) == 120


def test_the_events_api_merges_the_partitions_in_order_page_by_page(container, hot):
    tenant_id, events = hot
    for limit in (7, 100, 1000):
        rows = all_pages(container.reports, tenant_id, limit)
        assert [r["request_id"] for r in rows] == in_order(events), limit
    # the CSV export is those pages, row for row
    text = to_csv(all_pages(container.reports, tenant_id, 11), EVENT_COLUMNS)
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [r["request_id"] for r in exported] == in_order(events)
    assert [r["timestamp"] for r in exported] == sorted(r["timestamp"] for r in exported)


def test_a_cursor_continues_after_its_item_whatever_is_written_meanwhile(container, hot):
    tenant_id, events = hot
    first, cursor = container.reports.events(tenant_id=tenant_id, start="2026-01-01", end="2026-01-31", cursor=None,
                                             limit=30)
    # GIVEN later events flushed after the first page was read (other shards, a later time)
    later = [UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant_id, key_id="key_0", model=MODEL,
                        prompt_tokens=2, timestamp_ms=DAY1_MS + 86_400_000 + 10 * 3_600_000 + i, ledger_shard=i)
             for i in range(SHARDS)]
    assert container.usage.record_usage(later) == SHARDS
    # WHEN the same cursor is followed twice THEN both continue right after the first page
    rest = []
    while cursor:
        page, cursor = container.reports.events(tenant_id=tenant_id, start="2026-01-01", end="2026-01-31",
                                                cursor=cursor, limit=30)
        rest += page
    assert [r["request_id"] for r in first + rest] == in_order(events + later)


def test_cursors_are_opaque_bound_to_the_tenant_and_range_and_old_ones_still_work(container, hot):
    tenant_id, events = hot
    _, cursor = container.reports.events(tenant_id=tenant_id, start="2026-01-01", end="2026-01-31", cursor=None,
                                         limit=5)
    assert cursor and tenant_id not in cursor  # opaque (base64), names no partition in clear
    other = make_tenant(container, f"ten_other{uuid.uuid4().hex[:6]}")
    with pytest.raises(InvalidRequestError):  # another tenant's listing
        container.reports.events(tenant_id=other, start="2026-01-01", end="2026-01-31", cursor=cursor)
    with pytest.raises(InvalidRequestError):  # outside the range asked for
        container.reports.events(tenant_id=tenant_id, start="2026-01-05", end="2026-01-31", cursor=cursor)
    for forged in ("not-a-cursor", base64.urlsafe_b64encode(b'{"pk": 1}').decode(),
                   base64.urlsafe_b64encode(json.dumps({"pk": f"LEDGER#{tenant_id}", "sk": "x",
                                                        "extra": "y"}).encode()).decode()):
        with pytest.raises(InvalidRequestError):
            container.reports.events(tenant_id=tenant_id, start="2026-01-01", end="2026-01-31", cursor=forged)
    # A cursor issued before the sharding (DynamoDB's LastEvaluatedKey of the unsharded
    # partition: {pk, sk}) continues from its item.
    ordered = sorted(events, key=lambda e: (rfc3339(e.moment), e.request_id))
    old = base64.urlsafe_b64encode(json.dumps({"pk": f"LEDGER#{tenant_id}", "sk": f"{rfc3339(ordered[2].moment)}#"
                                                                                    f"{ordered[2].request_id}"})
                                   .encode()).decode().rstrip("=")
    rows, _ = container.reports.events(tenant_id=tenant_id, start="2026-01-01", end="2026-01-31", cursor=old, limit=4)
    assert [r["request_id"] for r in rows] == [e.request_id for e in ordered[3:7]]


def test_reconcile_sees_every_shard_and_repairs_one(container, hot):
    tenant_id, events = hot
    january = (date(2026, 1, 1), date(2026, 1, 31))
    clean = container.reconciler.run(*january, tenant_ids=[tenant_id])
    # one cell per day x key x shard that holds events (the unsharded items count as shard 0)
    cells = {(e.date, e.key_id, e.ledger_shard or 0) for e in events}
    assert (clean.drift, clean.unstable, clean.cells) == ([], [], len(cells))
    # GIVEN one shard's rollup cell that lost an increment
    day, key_id, shard = sorted(c for c in cells if c[2] > 0)[0]
    mine = [e for e in events if (e.date, e.key_id, e.ledger_shard or 0) == (day, key_id, shard)]
    truth = CellSums(requests=len(mine), tokens=sum(e.prompt_tokens for e in mine))
    container.usage.set_rollup(tenant_id, day, MODEL, key_id, shard=shard, expected=truth,
                               sums=CellSums(requests=truth.requests - 1, tokens=truth.tokens - 1))
    # WHEN reconcile runs with --fix THEN it names that cell, rewrites it, and the books agree
    found = container.reconciler.run(*january, tenant_ids=[tenant_id], fix=True)
    assert [(d.date, d.key_id, d.ledger_shard, d.fixed) for d in found.drift] == [(day, key_id, shard, True)]
    assert container.reconciler.run(*january, tenant_ids=[tenant_id]).drift == []
    assert [r["request_id"] for r in all_pages(container.reports, tenant_id, 50)] == in_order(events)


def test_rollup_readers_sum_the_shards(container, hot):
    tenant_id, events = hot
    rows = container.reports.usage(start="2026-01-01", end="2026-01-31", tenant_id=tenant_id)
    per_day = {r["date"]: (r["requests"], r["prompt_tokens"]) for r in rows}
    for day in ("2026-01-01", "2026-01-02"):
        mine = [e for e in events if e.date == day]
        assert per_day[day] == (len(mine), sum(e.prompt_tokens for e in mine))
    invoice = container.reports.invoices(month="2026-01")
    [line] = [line for line in invoice["lines"] if line["tenant_id"] == tenant_id]
    assert (line["requests"], line["prompt_tokens"]) == (120, sum(e.prompt_tokens for e in events))


def test_hot_tenant_shards_are_written_in_parallel_lanes_exactly_once(container):
    tenant_id = make_tenant(container, f"ten_lanes{uuid.uuid4().hex[:6]}")
    events = events_over_two_days(tenant_id, 600, shards=8)
    # GIVEN 600 events over 8 shards x 2 days x 2 keys, committed on 4 lanes at once
    assert container.usage.record_usage(events, lanes=4) == 600
    # AND redelivered, partly, on lanes again: nothing counts twice
    assert container.usage.record_usage(events[::3] + events[:5], lanes=4) == 0
    ledger = list(container.usage.ledger_all(tenant_id, "2026-01-01", "2026-01-31"))
    assert [i["request_id"] for i in ledger] == in_order(events)
    result = container.reconciler.run(date(2026, 1, 1), date(2026, 1, 31), tenant_ids=[tenant_id])
    assert result.drift == [] and result.cells == len({(e.date, e.key_id, e.ledger_shard) for e in events})


def test_shard_counts_follow_the_tenants_request_rate():
    assert ledger_shards(600) == ledger_shards(12_000) == 1  # up to 200 requests/s: one partition a day
    assert ledger_shards(12_001) == 2
    assert ledger_shards(5_000 * 60) == 25  # the target's hottest tenant: 200 events/s a partition
    assert ledger_shards(10**9) == 64
    ids = [uuid.uuid4().hex for _ in range(2000)]
    assert {ledger_shard(i, 1) for i in ids} == {0}
    spread = [ledger_shard(i, 25) for i in ids]
    assert set(spread) == set(range(25)) and max(spread.count(s) for s in range(25)) < 2 * 2000 / 25
    assert all(ledger_shard(i, 25) == ledger_shard(i, 25) for i in ids[:10])  # a function of the id alone
