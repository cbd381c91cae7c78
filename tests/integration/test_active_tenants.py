"""Flush work follows active tenants: the admission and settle scripts list a tenant in the
active index in the round trip that appends to its streams, the flusher visits listed tenants
only and takes a tenant out once both its streams are empty. With 10,000 idle tenants (streams
and consumer groups that exist, drained by the real flusher) beside 10 active ones, a flush
run sends within 1.1x the Redis commands of a run with the 10 alone, and the active tenants'
events are all in the ledger after one run, as before. Real Redis, the local DynamoDB."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from gateway.adapters.active_tenants import SINGLE_NODE_INDEX, ActiveTenants
from gateway.adapters.redis_store import RedisLimiter, events_stream, usage_stream
from gateway.domain.admission import Ticket, Verdict
from gateway.domain.plans import Limits
from gateway.domain.usage import UsageEvent
from gateway.models.records import TenantRecord, rfc3339, utcnow
from gateway.services.metering import Flusher, workers_for
from tests.redis_commands import counting_client

LIMITS = Limits(requests_per_minute=100_000, tokens_per_minute=10_000_000, monthly_tokens=10**12,
                max_concurrent_requests=1000)
MONTH = datetime.now(UTC).strftime("%Y-%m")


def make_tenant(container, tenant_id: str) -> str:
    container.accounts.create_tenant(TenantRecord(id=tenant_id, name="a", plan="starter",
                                                  created_at=rfc3339(utcnow())))
    container.seeder.seed(tenant_id)
    return tenant_id


def charge(limiter: RedisLimiter, tenant_id: str, n: int) -> list[str]:
    """``n`` requests admitted and charged through the real scripts (what the hot path does)."""
    ids = []
    for _ in range(n):
        ticket = Ticket(tenant_id=tenant_id, key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=5,
                        request_id=uuid.uuid4().hex, month=MONTH)
        decision = limiter.admit(ticket)
        assert decision.verdict is Verdict.OK
        event = UsageEvent(request_id=ticket.request_id, tenant_id=tenant_id, key_id="key_a",
                           model="all-MiniLM-L6-v2", prompt_tokens=5, timestamp_ms=int(time.time() * 1000))
        limiter.settle(ticket, decision, charge=True, event=event)
        ids.append(ticket.request_id)
    return ids


def flusher_on(client, container) -> Flusher:
    return Flusher(redis_client=client, usage=container.usage, accounts=container.accounts)


def in_ledger(container, tenant_id: str) -> set[str]:
    return {i["request_id"] for i in container.usage.ledger_all(tenant_id, "2000-01-01", "2100-01-01")}


def test_scripts_list_a_tenant_with_its_append_and_the_flusher_takes_it_out_when_drained(container):
    index = ActiveTenants(container.redis)
    tenant = make_tenant(container, f"ten_{uuid.uuid4().hex[:8]}")
    assert index.members() == []
    # a refunded request appends nothing: nothing to list
    ticket = Ticket(tenant_id=tenant, key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=5,
                    request_id=uuid.uuid4().hex, month=MONTH)
    container.limiter.settle(ticket, container.limiter.admit(ticket), charge=False)
    assert index.members() == []
    # a charged one is listed by the settle script itself
    charge(container.limiter, tenant, 3)
    assert index.members() == [tenant]
    # while entries remain, the tenant stays listed, whoever asks
    assert index.deactivate(tenant) is False and index.members() == [tenant]
    result = flusher_on(container.redis, container).flush()
    assert (result.written, result.idled, result.unflushed) == (3, 1, 0)
    assert index.members() == []
    # an event appended after the drain lists it again
    charge(container.limiter, tenant, 1)
    assert index.members() == [tenant]


def test_an_event_the_admission_script_emits_lists_the_tenant(container):
    from gateway.domain.admission import Grant, MoneySettings

    index = ActiveTenants(container.redis)
    tenant = make_tenant(container, f"ten_{uuid.uuid4().hex[:8]}")
    container.limiter.set_money(tenant, MoneySettings(prepaid=True, budget_nano=None, hard=False, budget_text="",
                                                      thresholds=(), low_balance_nano=None))
    container.limiter.add_grant(tenant, Grant("cr_x", 0, 1))  # one nano: the request costs more
    ticket = Ticket(tenant_id=tenant, key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=5,
                    request_id=uuid.uuid4().hex, month=MONTH, pricing=((None, 1000),))
    assert container.limiter.admit(ticket).verdict is Verdict.CREDITS  # refused, credits.exhausted emitted
    assert container.redis.xlen(events_stream(tenant)) == 1 and container.redis.xlen(usage_stream(tenant)) == 0
    assert index.members() == [tenant]


def test_ten_thousand_idle_tenants_cost_a_flush_run_nothing(container, redis_url):
    counted = counting_client(redis_url)
    limiter = RedisLimiter(counted)
    active = [make_tenant(container, f"ten_act{i}_{uuid.uuid4().hex[:6]}") for i in range(10)]

    # GIVEN 10 active tenants with 20 charged requests each, flushed by a run that is counted
    charged = {t: charge(limiter, t, 20) for t in active}
    counted.reset()
    alone = flusher_on(counted, container).flush()
    commands_alone, trips_alone = counted.total, counted.round_trips
    assert (alone.written, alone.unflushed, alone.oldest_unflushed_age_s, alone.errors) == (200, 0, 0.0, [])
    assert all(in_ledger(container, t) == set(charged[t]) for t in active)

    # AND 10,000 more tenants that were active once: streams and consumer groups that exist,
    # drained and taken out of the index by the real flusher
    idle = [f"ten_idle{i:05d}" for i in range(10_000)]
    pipe = container.redis.pipeline(transaction=False)
    for tenant in idle:
        pipe.xadd(usage_stream(tenant), {"x": "1"})
        pipe.xgroup_create(usage_stream(tenant), "flusher", id="$")
        pipe.xgroup_create(events_stream(tenant), "flusher", id="$", mkstream=True)
        pipe.hset(f"{{t:{tenant}}}:cfg", "seeded", "1")
        pipe.sadd(SINGLE_NODE_INDEX, tenant)  # listed, as their settle scripts once did
    pipe.execute()
    pipe = container.redis.pipeline(transaction=False)
    for tenant in idle:
        pipe.xtrim(usage_stream(tenant), maxlen=0)  # what a flush left of them: acknowledged and deleted
    pipe.execute()
    drained = flusher_on(container.redis, container).flush(idle)
    assert drained.errors == [] and drained.idled == 10_000
    assert container.redis.exists(*[usage_stream(t) for t in idle[:100]]) == 100  # the streams are still there
    assert ActiveTenants(container.redis).members() == []

    # WHEN the 10 active tenants charge the same again and a run is counted
    charged = {t: charge(limiter, t, 20) for t in active}
    calls = count_dynamodb(container)
    counted.reset()
    among_idle = flusher_on(counted, container).flush()

    # THEN it sent within 1.1x the commands (and round trips) of the run with the 10 alone,
    # read no tenant list from DynamoDB, and left the 10 as fresh: everything in the ledger
    assert counted.total <= 1.1 * commands_alone, (counted.total, commands_alone, counted.commands)
    assert counted.round_trips <= 1.1 * trips_alone
    assert calls["Query"] == 0 and calls["Scan"] == 0
    assert (among_idle.streams, among_idle.written, among_idle.unflushed, among_idle.oldest_unflushed_age_s,
            among_idle.errors) == (10, 200, 0, 0.0, [])
    assert all(set(charged[t]) <= in_ledger(container, t) for t in active)


def count_dynamodb(container) -> Counter:
    calls: Counter = Counter()
    container.dynamodb.meta.events.register("provide-client-params.dynamodb.*",
                                            lambda params, **kwargs: calls.update([kwargs["model"].name]))
    return calls


def test_a_worker_drains_its_share_and_the_dispatcher_sizes_the_pool(container):
    index = ActiveTenants(container.redis)
    tenants = [make_tenant(container, f"ten_w{i}_{uuid.uuid4().hex[:6]}") for i in range(6)]
    for tenant in tenants:
        charge(container.limiter, tenant, 4)
    # GIVEN two workers: each drains only its own share (by hash slot), together all of it
    shares = [set(index.members(part, 2)) for part in range(2)]
    assert shares[0] | shares[1] == set(tenants) and not shares[0] & shares[1]
    plan = flusher_on(container.redis, container).plan(max_workers=4, events_per_worker=10)
    assert (plan.active, plan.unflushed, plan.workers) == (6, 24, 3)  # 24 waiting at 10 per worker
    first = flusher_on(container.redis, container).run(part=0, parts=2, until=time.time() + 0.5, idle_s=0.1)
    assert first.written == 4 * len(shares[0]) and set(index.members()) == shares[1]
    second = flusher_on(container.redis, container).run(part=1, parts=2, until=time.time() + 0.5, idle_s=0.1)
    assert second.written == 4 * len(shares[1]) and index.members() == []
    # AND the workers' flushed counts are what the next dispatch sizes the pool by
    plan = flusher_on(container.redis, container).plan(max_workers=4, events_per_worker=10)
    assert (plan.active, plan.unflushed, plan.workers) == (0, 0, 0)
    assert plan.flushed_last_interval in (0, 24)  # counted in this clock minute: the next dispatch reads it


def test_worker_count_follows_demand():
    assert workers_for(active=0, unflushed=0, flushed_last_interval=500, events_per_worker=100, max_workers=8) == 0
    assert workers_for(active=3, unflushed=0, flushed_last_interval=0, events_per_worker=100, max_workers=8) == 1
    assert workers_for(active=50, unflushed=250, flushed_last_interval=300, events_per_worker=100,
                       max_workers=8) == 6
    assert workers_for(active=50, unflushed=10**6, flushed_last_interval=0, events_per_worker=100,
                       max_workers=8) == 8
    assert workers_for(active=2, unflushed=10**6, flushed_last_interval=0, events_per_worker=100,
                       max_workers=8) == 2  # one worker per tenant at most


def test_a_hot_tenants_stream_parts_are_drained_by_several_workers_at_once(container):
    from concurrent.futures import ThreadPoolExecutor

    from gateway.adapters.active_tenants import part_of
    from gateway.domain.usage import ledger_shard, ledger_shards, stream_part

    index = ActiveTenants(container.redis)
    tenant = make_tenant(container, f"ten_hot_{uuid.uuid4().hex[:6]}")
    shards = ledger_shards(5_000 * 60)  # the target's hottest tenant: 25 ledger shards, 4 stream parts
    month = MONTH
    # GIVEN 400 charged requests, each appended to the stream part of its ledger shard
    charged = []
    for _ in range(400):
        ticket = Ticket(tenant_id=tenant, key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=5,
                        request_id=uuid.uuid4().hex, month=month)
        decision = container.limiter.admit(ticket)
        shard = ledger_shard(ticket.request_id, shards)
        container.limiter.settle(ticket, decision, charge=True, event=UsageEvent(
            request_id=ticket.request_id, tenant_id=tenant, key_id="key_a", model="all-MiniLM-L6-v2",
            prompt_tokens=5, timestamp_ms=int(time.time() * 1000), ledger_shard=shard))
        charged.append((ticket.request_id, stream_part(shard)))
    units = index.members()
    assert sorted(units) == sorted([tenant, f"{tenant}#1", f"{tenant}#2", f"{tenant}#3"])
    for part in range(4):
        assert container.redis.xlen(usage_stream(tenant, part)) == sum(1 for _, p in charged if p == part)
    # AND a Redis that lost the tenant's counters (not its streams) seeds them back from all parts
    container.redis.delete(f"{{t:{tenant}}}:cfg", f"{{t:{tenant}}}:m:{month}")
    assert container.seeder.seed(tenant)
    assert int(container.redis.hget(f"{{t:{tenant}}}:m:{month}", "tok")) == 400 * 5
    # WHEN four workers run at once, each on its share (the parts land on different workers)
    assert len({part_of(unit, 4) for unit in units}) == 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda part: flusher_on(container.redis, container).run(
            part=part, parts=4, until=time.time() + 1.0, idle_s=0.1), range(4)))
    # THEN every part was drained, each event once, and no rollup write conflicted
    assert sum(r.written for r in results) == 400 and all(r.errors == [] for r in results)
    assert in_ledger(container, tenant) == {rid for rid, _ in charged}
    assert index.members() == []
