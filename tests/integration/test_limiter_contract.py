"""The Limiter port's contract (gateway.domain.admission), run against every implementation:
RedisLimiter on a real redis-server and the in-process LocalLimiter that stands in for it
while Redis is unreachable (the `limits` library's run-every-storage pattern). Cases only
Redis can pass (quota, key state, the usage stream) are in test_admission.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from gateway.adapters.local_limits import LocalLimiter
from gateway.adapters.redis_store import RedisLimiter
from gateway.domain.admission import Decision, Limiter, Ticket, Verdict
from gateway.domain.plans import Limits
from tests.integration.conftest import seed_empty

LIMITS = Limits(requests_per_minute=5, tokens_per_minute=100, monthly_tokens=10**9, max_concurrent_requests=2)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["redis", "local"])
def limiter(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Limiter]:
    if request.param == "local":
        yield LocalLimiter(clock_ms=clock)
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    limiter = RedisLimiter(client, lease_ms=60_000, clock_ms=clock)
    seed_empty(limiter, "ten_a", "ten_busy", "ten_quiet")
    yield limiter
    client.close()


def ticket(cost: int = 10, limits: Limits = LIMITS, tenant: str = "ten_a") -> Ticket:
    return Ticket(tenant_id=tenant, key_id="key_a", key_expires_ms=0, limits=limits, tokens=cost,
                  request_id=uuid.uuid4().hex, month="2026-11")


def settle(limiter: Limiter, t: Ticket, decision: Decision, *, charge: bool = False) -> None:
    limiter.settle(t, decision, charge=charge)


def test_request_bucket_admits_its_capacity_then_refuses_with_retry_after(limiter: Limiter) -> None:
    verdicts = []
    for _ in range(5):
        t = ticket(cost=1)
        decision = limiter.admit(t)
        verdicts.append(decision.verdict)
        settle(limiter, t, decision)
    assert verdicts == [Verdict.OK] * 5
    refused = limiter.admit(ticket(cost=1))
    assert refused.verdict is Verdict.REQUESTS and not refused.admitted
    assert refused.requests_remaining == 0
    assert refused.retry_after_s == 12  # one request refills in 60 / 5 = 12 s


def test_the_bucket_refills_at_its_rate(limiter: Limiter, clock: Clock) -> None:
    for _ in range(5):
        t = ticket(cost=1)
        settle(limiter, t, limiter.admit(t))
    clock.ms += 11_999
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.REQUESTS
    clock.ms += 1
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.OK


def test_token_bucket_takes_the_exact_cost(limiter: Limiter) -> None:
    first = limiter.admit(ticket(cost=60))
    assert first.verdict is Verdict.OK and first.tokens_remaining == 40
    assert limiter.admit(ticket(cost=41)).verdict is Verdict.TOKENS
    assert limiter.admit(ticket(cost=40)).verdict is Verdict.OK


def test_concurrency_slots_are_held_until_settled(limiter: Limiter) -> None:
    a, b = ticket(cost=1), ticket(cost=1)
    first = limiter.admit(a)
    assert first.verdict is Verdict.OK
    assert limiter.admit(b).verdict is Verdict.OK
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.CONCURRENCY
    settle(limiter, a, first)
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.OK


def test_a_refused_request_takes_nothing(limiter: Limiter) -> None:
    assert limiter.admit(ticket(cost=101)).verdict is Verdict.TOKENS  # more than the bucket holds
    admitted = limiter.admit(ticket(cost=100))
    assert admitted.verdict is Verdict.OK
    assert (admitted.requests_remaining, admitted.tokens_remaining) == (4, 0)


def test_tenants_do_not_share_buckets(limiter: Limiter) -> None:
    for _ in range(5):
        t = ticket(cost=1, tenant="ten_busy")
        decision = limiter.admit(t)
        assert decision.admitted
        settle(limiter, t, decision)
    assert limiter.admit(ticket(cost=1, tenant="ten_busy")).verdict is Verdict.REQUESTS
    assert limiter.admit(ticket(cost=1, tenant="ten_quiet")).verdict is Verdict.OK


def test_a_counted_request_takes_one_request_and_no_tokens(limiter: Limiter) -> None:
    for _ in range(5):
        assert limiter.count_request(ticket(cost=0)).verdict is Verdict.OK
    refused = limiter.count_request(ticket(cost=0))
    assert refused.verdict is Verdict.REQUESTS and refused.retry_after_s == 12
    assert refused.tokens_remaining == 100  # the token bucket is untouched
    # Admission after the gate takes the tokens and not a second request.
    counted = Ticket(tenant_id="ten_a", key_id="key_a", key_expires_ms=0, limits=LIMITS, tokens=30,
                     request_id=uuid.uuid4().hex, month="2026-11", counted=True)
    decision = limiter.admit(counted)
    assert decision.verdict is Verdict.OK and decision.tokens_remaining == 70 and decision.requests_remaining == 0
    assert limiter.admit(ticket(cost=1)).verdict is Verdict.REQUESTS


def test_counting_refills_the_token_bucket_it_does_not_take(limiter: Limiter, clock: Clock) -> None:
    # One state hash holds both buckets and one timestamp: counting a request moves the
    # timestamp, so it must write the token level refilled to it, or tokens would be lost.
    t = ticket(cost=100)
    settle(limiter, t, limiter.admit(t))
    clock.ms += 30_000  # half the token bucket back
    assert limiter.count_request(ticket(cost=0)).tokens_remaining == 50
    clock.ms += 30_000
    assert limiter.admit(ticket(cost=100)).verdict is Verdict.OK
