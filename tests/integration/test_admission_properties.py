"""Property tests: the Lua buckets and quota against a simple reference model, on a real
redis-server with the clock driven by the test."""

from __future__ import annotations

import uuid
from fractions import Fraction

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.redis_store import RedisLimiter
from gateway.domain.admission import Ticket, Verdict
from gateway.domain.plans import Limits
from gateway.domain.usage import UsageEvent
from tests.integration.conftest import seed_empty


class ReferenceBuckets:
    """Continuous token buckets in exact fractions, plus a hard monthly quota."""

    def __init__(self, limits: Limits, start_ms: int) -> None:
        self.limits = limits
        self.requests = Fraction(limits.requests_per_minute)
        self.tokens = Fraction(limits.tokens_per_minute)
        self.used = 0
        self.at = start_ms

    def admit(self, now_ms: int, cost: int) -> Verdict:
        elapsed = Fraction(now_ms - self.at, 60_000)
        self.at = now_ms
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        self.requests = min(Fraction(rpm), self.requests + elapsed * rpm)
        self.tokens = min(Fraction(tpm), self.tokens + elapsed * tpm)
        if self.used + cost > self.limits.monthly_tokens:
            return Verdict.QUOTA
        if self.requests < 1:
            return Verdict.REQUESTS
        if self.tokens < cost:
            return Verdict.TOKENS
        self.requests -= 1
        self.tokens -= cost
        self.used += cost
        return Verdict.OK


limits_strategy = st.builds(
    Limits,
    requests_per_minute=st.integers(1, 50),
    tokens_per_minute=st.integers(1, 500),
    monthly_tokens=st.integers(1, 3000),
    max_concurrent_requests=st.just(1_000_000),
)
# Bursts (no time passing), short and long gaps; small and large costs: every limit gets hit.
gaps = st.one_of(st.just(0), st.integers(0, 2_000), st.integers(0, 90_000))
costs = st.one_of(st.integers(1, 5), st.integers(1, 120))
steps = st.lists(st.tuples(gaps, costs), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=limits_strategy, steps=steps)
def test_lua_buckets_match_the_reference_model(redis_url, limits, steps):
    client = redis.Redis.from_url(redis_url)
    now = {"ms": 1_700_000_000_000}
    limiter = RedisLimiter(client, clock_ms=lambda: now["ms"])
    reference = ReferenceBuckets(limits, now["ms"])
    tenant = uuid.uuid4().hex
    seed_empty(limiter, tenant)
    admitted: list[tuple[int, int]] = []
    for gap_ms, cost in steps:
        now["ms"] += gap_ms
        expected = reference.admit(now["ms"], cost)
        request_id = uuid.uuid4().hex
        ticket = Ticket(tenant_id=tenant, key_id="k", key_expires_ms=0, limits=limits, tokens=cost,
                        request_id=request_id, month="2026-11")
        got = limiter.admit(ticket)
        assert got.verdict is expected, (gap_ms, cost)
        if got.admitted:
            admitted.append((now["ms"], cost))
            event = UsageEvent(request_id=request_id, tenant_id=tenant, key_id="k", model="m", prompt_tokens=cost,
                               timestamp_ms=now["ms"])
            limiter.settle(ticket, got, charge=True, event=event)

    # The contract's bound, checked directly: in any interval of t seconds at most
    # N + N*t/60 requests (and tokens) are admitted, and the quota is never exceeded.
    for i, (start, _) in enumerate(admitted):
        for j in range(i, len(admitted)):
            t_ms = admitted[j][0] - start
            window = admitted[i : j + 1]
            assert len(window) <= limits.requests_per_minute * (1 + Fraction(t_ms, 60_000))
            assert sum(c for _, c in window) <= limits.tokens_per_minute * (1 + Fraction(t_ms, 60_000))
    assert sum(c for _, c in admitted) <= limits.monthly_tokens
    client.close()
