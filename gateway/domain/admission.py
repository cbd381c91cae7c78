"""Admission: the port every limiter implements, and the values that cross it.

A request is admitted (or refused) in one atomic step before inference and settled in one
step after it: charged (its usage recorded) or refunded. ``RedisLimiter`` is the real
implementation (one Lua script each way); ``LocalLimiter`` holds a container's rates while
Redis is unreachable. Both pass the same contract tests (tests/integration/test_limiter_contract.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.plans import Limits
from gateway.domain.usage import UsageEvent


class Verdict(enum.StrEnum):
    OK = "ok"
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    SUSPENDED = "suspended"
    QUOTA = "quota"
    REQUESTS = "requests"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What admission needs to know about one request."""

    tenant_id: str
    key_id: str
    key_expires_ms: int  # 0 = never
    limits: Limits
    cost: int
    request_id: str
    month: str  # YYYY-MM, UTC


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    requests_remaining: int
    requests_reset_s: int
    tokens_remaining: int
    tokens_reset_s: int
    retry_after_s: int
    local: bool = False  # decided by the in-process fallback while Redis was unreachable

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.OK


class AdmissionUnavailable(Exception):
    """The limiter's store cannot be reached: nothing was decided, nothing changed."""


class Limiter(Protocol):
    def admit(self, ticket: Ticket) -> Decision:
        """Check every limit and, only if all pass, take from each: atomically."""
        ...

    def settle(self, ticket: Ticket, *, charge: bool, event: UsageEvent | None = None) -> None:
        """Release the request's concurrency slot; keep the charge and record ``event``, or refund."""
        ...
