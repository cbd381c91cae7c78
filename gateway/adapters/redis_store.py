"""Admission and settlement in Redis: the *where* of the limits.

Two scripts, two round trips per request (``admit`` before inference, ``settle`` after).
``tenant_key`` is the one function that names every Redis key; all of a tenant's keys
share its hash tag so each script runs on one shard.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis

from gateway.adapters.redis_client import connect  # noqa: F401 - re-exported for existing callers
from gateway.domain.plans import Limits

QUOTA_TTL_S = 40 * 86400  # a month's counter outlives the month it counts
STREAM_GROUP = "flusher"


def tenant_key(tenant_id: str, name: str) -> str:
    return f"{{t:{tenant_id}}}:{name}"


def usage_stream(tenant_id: str) -> str:
    return tenant_key(tenant_id, "usage")


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
    quota_used: int
    local: bool = False  # decided by the in-process fallback while Redis was unreachable

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.OK


class RedisLike(Protocol):
    def register_script(self, script: str) -> Any: ...
    def hset(self, name: str, key: str, value: Any) -> Any: ...
    def set(self, name: str, value: Any) -> Any: ...


def _script(name: str) -> str:
    return resources.files("gateway.lua").joinpath(name).read_text()


class RedisLimiter:
    """Runs the admission and settlement scripts (EVALSHA, reloaded on NOSCRIPT by
    redis-py's Script) and writes the key and tenant state they read."""

    def __init__(self, client: RedisLike, *, lease_ms: int = 60_000,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.client = client
        self.lease_ms = lease_ms
        # Redis's own clock by default, so every Lambda agrees; tests may drive time.
        self.clock_ms = clock_ms
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))

    def admit(self, ticket: Ticket) -> Decision:
        t = ticket.tenant_id
        keys = [
            tenant_key(t, "keys"),
            tenant_key(t, "status"),
            tenant_key(t, "buckets"),
            tenant_key(t, f"quota:{ticket.month}"),
            tenant_key(t, "inflight"),
        ]
        limits = ticket.limits
        args = [
            ticket.key_id,
            ticket.key_expires_ms,
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.monthly_tokens,
            limits.max_concurrent_requests,
            ticket.cost,
            ticket.request_id,
            self.lease_ms,
            QUOTA_TTL_S,
        ]
        if self.clock_ms is not None:
            args.append(self.clock_ms())
        verdict, rq_rem, rq_reset, tk_rem, tk_reset, retry_ms, used = self._admit(keys, args)
        return Decision(
            verdict=Verdict(verdict.decode() if isinstance(verdict, bytes) else verdict),
            requests_remaining=int(rq_rem),
            requests_reset_s=math.ceil(int(rq_reset) / 1000),
            tokens_remaining=int(tk_rem),
            tokens_reset_s=math.ceil(int(tk_reset) / 1000),
            retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)),
            quota_used=int(used),
        )

    def settle(self, ticket: Ticket, *, charge: bool, event: dict[str, str] | None = None) -> None:
        t = ticket.tenant_id
        keys = [
            tenant_key(t, "inflight"),
            tenant_key(t, f"quota:{ticket.month}"),
            usage_stream(t),
        ]
        fields: list[str] = []
        for name, value in (event or {}).items():
            fields += [name, str(value)]
        self._settle(keys, [ticket.request_id, "charge" if charge else "refund", ticket.cost, *fields])

    # State written by the billing API and read by the admission script.
    def set_key_expiry(self, tenant_id: str, key_id: str, expires_ms: int) -> None:
        self.client.hset(tenant_key(tenant_id, "keys"), key_id, expires_ms)

    def revoke_key(self, tenant_id: str, key_id: str) -> None:
        self.client.hset(tenant_key(tenant_id, "keys"), key_id, 0)

    def set_tenant_status(self, tenant_id: str, status: str) -> None:
        self.client.set(tenant_key(tenant_id, "status"), status)


REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
