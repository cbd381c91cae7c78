"""The in-process stand-in for the rate buckets while Redis is unreachable.

Used only when ``MAAS_QUOTA_ON_REDIS_FAILURE=open``: each container then limits each tenant
to its plan's rates on its own (so N warm containers admit at most N times the rate), and the
monthly quota is not enforced until Redis answers again. Bounded: it forgets the least
recently seen tenants beyond ``max_tenants``. It implements the same ``Limiter`` port as
``RedisLimiter`` and passes the same contract tests for what it enforces (rates and
concurrency). It records no usage: the caller writes a charged request's event straight to
the ledger (the idempotent write the flusher uses)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.domain.admission import Decision, Ticket, Verdict
from gateway.domain.money import tiered_cost
from gateway.domain.usage import UsageEvent

PERIOD_MS = 60_000


@dataclass
class _Buckets:
    requests: float
    tokens: float
    updated_ms: float
    in_flight: int = 0


class LocalLimiter:
    def __init__(self, *, max_tenants: int = 10_000, clock_ms: Callable[[], float] | None = None) -> None:
        self.max_tenants = max_tenants
        self.clock_ms = clock_ms or (lambda: time.monotonic() * 1000)
        self._tenants: OrderedDict[str, _Buckets] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, ticket: Ticket) -> Decision:
        return self._decide(ticket, requests=0 if ticket.counted else 1, tokens=ticket.tokens, slot=True)

    def count_request(self, ticket: Ticket) -> Decision:
        # Key state lives in Redis only: with Redis gone, the key record (authentication) decides.
        return self._decide(ticket, requests=1, tokens=0, slot=False)

    def _decide(self, ticket: Ticket, *, requests: int, tokens: int, slot: bool) -> Decision:
        limits = ticket.limits
        now = self.clock_ms()
        with self._lock:
            state = self._tenants.pop(ticket.tenant_id, None) or _Buckets(
                limits.requests_per_minute, limits.tokens_per_minute, now)
            self._tenants[ticket.tenant_id] = state
            while len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
            elapsed = now - state.updated_ms
            state.requests = min(limits.requests_per_minute,
                                 state.requests + elapsed * limits.requests_per_minute / PERIOD_MS)
            state.tokens = min(limits.tokens_per_minute,
                               state.tokens + elapsed * limits.tokens_per_minute / PERIOD_MS)
            state.updated_ms = now
            verdict, retry_ms = Verdict.OK, 0.0
            if state.requests < requests:
                verdict = Verdict.REQUESTS
                retry_ms = (requests - state.requests) * PERIOD_MS / limits.requests_per_minute
            elif state.tokens < tokens:
                verdict = Verdict.TOKENS
                retry_ms = (tokens - state.tokens) * PERIOD_MS / limits.tokens_per_minute
            elif slot and state.in_flight >= limits.max_concurrent_requests:
                verdict, retry_ms = Verdict.CONCURRENCY, 1000
            else:
                state.requests -= requests
                state.tokens -= tokens
                state.in_flight += slot
            return Decision(
                verdict=verdict,
                requests_remaining=math.floor(state.requests),
                requests_reset_s=math.ceil((limits.requests_per_minute - state.requests) * 60
                                           / limits.requests_per_minute),
                tokens_remaining=math.floor(state.tokens),
                tokens_reset_s=math.ceil((limits.tokens_per_minute - state.tokens) * 60 / limits.tokens_per_minute),
                retry_after_s=max(1, math.ceil(retry_ms / 1000)),
                # Flat prices only (a graduated price needs the month's count, which only Redis holds).
                cost_nano=tiered_cost(0, tokens, ticket.pricing)[0],
                local=True,
            )

    def settle(self, ticket: Ticket, decision: Decision, *, charge: bool, event: UsageEvent | None = None,
               once: str = "") -> None:
        with self._lock:
            state = self._tenants.get(ticket.tenant_id)
            if state is not None and state.in_flight > 0:
                state.in_flight -= 1
