"""What only the Redis limiter does, against a real redis-server: the monthly quota, key
and tenant state, the usage stream, script reloading. What every limiter does is in
test_limiter_contract.py."""

from __future__ import annotations

import uuid

import pytest
import redis

from gateway.adapters.redis_store import RedisLimiter, month_key, tenant_key, usage_stream
from gateway.domain.admission import Ticket, Verdict
from gateway.domain.plans import Limits
from gateway.domain.usage import UsageEvent
from tests.integration.conftest import seed_empty

LIMITS = Limits(requests_per_minute=5, tokens_per_minute=100, monthly_tokens=1000, max_concurrent_requests=2)


@pytest.fixture
def client(redis_url):
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def limiter(client):
    limiter = RedisLimiter(client, lease_ms=60_000)
    seed_empty(limiter, "ten_a", "ten_b")
    return limiter


def tokens_reserved(client, tenant="ten_a") -> int | None:
    value = client.hget(month_key(tenant, "2026-11"), "tok")
    return None if value is None else int(value)


def ticket(cost=10, limits=LIMITS, tenant="ten_a", key="key_a", expires_ms=0):
    return Ticket(tenant_id=tenant, key_id=key, key_expires_ms=expires_ms, limits=limits, tokens=cost,
                  request_id=uuid.uuid4().hex, month="2026-11")


def test_quota_never_exceeded_and_refund_returns_it(limiter, client):
    big = Limits(requests_per_minute=1000, tokens_per_minute=1000, monthly_tokens=25, max_concurrent_requests=100)
    first = ticket(cost=20, limits=big)
    decision = limiter.admit(first)
    assert decision.verdict is Verdict.OK
    assert limiter.admit(ticket(cost=6, limits=big)).verdict is Verdict.QUOTA
    limiter.settle(first, decision, charge=False)  # failed upstream: refunded
    assert limiter.admit(ticket(cost=25, limits=big)).verdict is Verdict.OK
    assert tokens_reserved(client) == 25


def test_charge_appends_usage_event_and_keeps_reservation(limiter, client):
    t = ticket(cost=7)
    decision = limiter.admit(t)
    event = UsageEvent(request_id=t.request_id, tenant_id="ten_a", key_id="key_a", model="m", prompt_tokens=7,
                       timestamp_ms=1)
    limiter.settle(t, decision, charge=True, event=event)
    entries = client.xrange(usage_stream("ten_a"))
    assert len(entries) == 1 and UsageEvent.from_fields(entries[0][1]) == event
    assert tokens_reserved(client) == 7


def test_revocation_expiry_and_suspension_are_read_from_redis(limiter):
    limiter.revoke_key("ten_a", "key_a")
    assert limiter.admit(ticket()).verdict is Verdict.KEY_REVOKED
    assert limiter.admit(ticket(key="key_b", expires_ms=1)).verdict is Verdict.KEY_EXPIRED
    limiter.set_tenant_status("ten_b", "suspended")
    assert limiter.admit(ticket(tenant="ten_b")).verdict is Verdict.SUSPENDED
    limiter.set_tenant_status("ten_b", "active")
    assert limiter.admit(ticket(tenant="ten_b")).verdict is Verdict.OK


def test_rejections_change_nothing(limiter, client):
    limiter.set_tenant_status("ten_a", "suspended")
    limiter.admit(ticket(cost=50))
    assert tokens_reserved(client) == 0
    assert not client.exists(tenant_key("ten_a", "buckets"), tenant_key("ten_a", "inflight"))


def test_scripts_reload_after_script_flush(limiter, client):
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.OK
    client.script_flush()
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.OK



def test_the_gate_refuses_a_revoked_expired_or_suspended_key_and_takes_nothing(limiter, client):
    revoked = ticket(0)
    limiter.revoke_key("ten_a", "key_a")
    assert limiter.count_request(revoked).verdict is Verdict.KEY_REVOKED
    assert limiter.count_request(ticket(0, tenant="ten_b", expires_ms=1)).verdict is Verdict.KEY_EXPIRED
    assert client.exists(tenant_key("ten_a", "buckets"), tenant_key("ten_b", "buckets")) == 0
    limiter.set_tenant_status("ten_b", "suspended")
    assert limiter.count_request(ticket(0, tenant="ten_b", key="key_b")).verdict is Verdict.SUSPENDED
    assert limiter.count_request(ticket(0, tenant="ten_unseeded")).verdict is Verdict.UNSEEDED


def test_a_batch_reservation_takes_money_and_quota_but_no_bucket_and_no_lease(limiter, client):
    # A whole batch is more than the tenant's tokens_per_minute, and takes none of it.
    batch = Ticket(tenant_id="ten_a", key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=900,
                   request_id="batch_1:m", month="2026-11", pricing=((None, 3),), batch=True)
    decision = limiter.admit(batch)
    assert (decision.verdict, decision.cost_nano, decision.key_holds) == (Verdict.OK, 2700, "")
    assert tokens_reserved(client) == 900
    assert not client.exists(tenant_key("ten_a", "inflight"))
    assert limiter.admit(ticket(cost=101)).verdict is Verdict.QUOTA  # the quota is reserved: 900 + 101 > 1000
    assert limiter.admit(ticket(cost=90)).verdict is Verdict.OK  # the online buckets are whole


def test_a_settlement_named_once_happens_once(limiter, client):
    t = ticket(cost=7)
    decision = limiter.admit(t)
    event = UsageEvent(request_id="batch_1-0-m", tenant_id="ten_a", key_id="key_a", model="m@batch", prompt_tokens=7,
                       timestamp_ms=1)
    for _ in range(3):  # a resumed worker settles the same chunk again
        limiter.settle(t, decision, charge=True, event=event, once="batch_1:0:m:c")
    assert len(client.xrange(usage_stream("ten_a"))) == 1
    assert int(client.hget(month_key("ten_a", "2026-11"), "costc") or 0) == decision.cost_nano
    refund = ticket(cost=5)
    refunded = limiter.admit(refund)
    for _ in range(2):
        limiter.settle(refund, refunded, charge=False, once="batch_1:0:m:r")
    assert tokens_reserved(client) == 7
    assert client.ttl(month_key("ten_a", "2026-11")) > 0
