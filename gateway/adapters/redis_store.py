"""Admission and settlement in Redis: the *where* of the limits.

Two scripts, two round trips per request (``admit`` before inference, ``settle`` after); a
third, ``gate``, counts a request that is refused before admission or whose body is large.
Every key is named by gateway/adapters/redis_keys.py (``tenant_key``); all of a tenant's keys
share its hash tag so each script runs on one shard.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis

from gateway.adapters.active_tenants import ActiveTenants, work_unit
from gateway.adapters.redis_keys import STREAM_GROUP as STREAM_GROUP  # the flusher's, named beside the keys
from gateway.adapters.redis_keys import events_stream, key_month_key, month_key, tenant_key, usage_stream
from gateway.domain.admission import (
    AdmissionUnavailable,
    Decision,
    Grant,
    KeySettings,
    MoneySettings,
    TenantState,
    Thresholds,
    Ticket,
    Verdict,
)
from gateway.domain.money import Tiers
from gateway.domain.usage import STREAM_PARTS, UsageEvent, stream_part

MONTH_TTL_S = 40 * 86400  # a month's counters outlive the month they count
# What "Redis is unreachable" looks like to redis-py; everything else is a bug or a script error.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisLike(Protocol):
    def register_script(self, script: str) -> Any: ...
    def hset(self, name: str, key: str, value: Any) -> Any: ...
    def set(self, name: str, value: Any) -> Any: ...
    def pipeline(self, transaction: bool = True) -> Any: ...
    def ping(self) -> Any: ...


def _script(name: str, *, prelude: str | None = None) -> str:
    """A script's text; ``prelude``: a file of shared functions put before it (Redis scripts
    cannot import)."""
    scripts = resources.files("gateway.lua")
    text = scripts.joinpath(name).read_text()
    return scripts.joinpath(prelude).read_text() + text if prelude else text


NO_EXPIRY_MS = 2**52  # a grant that never expires sorts after every real expiry


@dataclass(frozen=True, slots=True)
class MoneyState:
    grants: list[Grant]  # expiry ms 0 = never
    month_charged_nano: int

    def credits_remaining(self, now_ms: int) -> int:
        return sum(max(0, g.remaining_nano) for g in self.grants if not g.expires_ms or g.expires_ms > now_ms)


def _tiers(pricing: Tiers) -> str:
    return ",".join(f"{'-' if up_to is None else up_to}:{price}" for up_to, price in pricing)


def _thresholds(levels: Thresholds) -> str:
    return ",".join(f"{level}:{fraction}" for level, fraction in levels)


def _cfg_fields(money: MoneySettings) -> dict[str, str]:
    return {"mode": "prepaid" if money.prepaid else "postpaid",
            "budget": "" if money.budget_nano is None else str(money.budget_nano),
            "hard": "1" if money.hard else "0", "amount": money.budget_text,
            "thr": _thresholds(money.thresholds),
            "low": "" if money.low_balance_nano is None else str(money.low_balance_nano)}


def _key_cfg(settings: KeySettings) -> str:
    if settings.empty:
        return ""
    limits = settings.limits
    config: dict[str, Any] = {"rpm": limits.requests_per_minute, "tpm": limits.tokens_per_minute,
                              "monthly": limits.monthly_tokens, "conc": limits.max_concurrent_requests}
    if settings.budget_nano is not None:
        config |= {"budget": settings.budget_nano, "hard": int(settings.hard), "amount": settings.budget_text,
                   "thr": _thresholds(settings.thresholds)}
    return json.dumps({k: v for k, v in config.items() if v is not None})


def _decision(reply: list[Any]) -> Decision:
    """admit.lua's and gate.lua's reply (buckets.lua's ``reply``)."""
    (verdict, rq_rem, rq_reset, tk_rem, tk_reset, retry_ms, cost, debits, tiers,
     krq_rem, krq_reset, ktk_rem, ktk_reset) = (v.decode() if isinstance(v, bytes) else v for v in reply)
    return Decision(
        verdict=Verdict(verdict),
        requests_remaining=int(rq_rem),
        requests_reset_s=math.ceil(int(rq_reset) / 1000),
        tokens_remaining=int(tk_rem),
        tokens_reset_s=math.ceil(int(tk_reset) / 1000),
        retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)),
        cost_nano=int(cost),
        debits=debits,
        tier_tokens=tuple(int(n) for n in tiers.split(",") if n),
        key_requests=None if int(krq_rem) < 0 else (int(krq_rem), math.ceil(int(krq_reset) / 1000)),
        key_tokens=None if int(ktk_rem) < 0 else (int(ktk_rem), math.ceil(int(ktk_reset) / 1000)),
    )


class RedisLimiter:
    """The ``Limiter`` of gateway.domain.admission: runs the admission and settlement scripts
    (EVALSHA, reloaded on NOSCRIPT by redis-py's Script), seeds a tenant's state and projects
    what the billing API changes. An unreachable Redis is ``AdmissionUnavailable``."""

    def __init__(self, client: RedisLike, *, lease_ms: int = 60_000,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.client = client
        self.lease_ms = lease_ms
        # Redis's own clock by default, so every Lambda agrees; tests may drive time.
        self.clock_ms = clock_ms
        self._admit = client.register_script(_script("admit.lua", prelude="buckets.lua"))
        self._gate = client.register_script(_script("gate.lua", prelude="buckets.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._seed = client.register_script(_script("seed.lua"))
        self._grant = client.register_script(_script("grant.lua"))
        self._project = client.register_script(_script("project.lua"))
        # The scripts list a tenant with something to flush in its slot's index (no extra command).
        self._active_key = ActiveTenants(client).key_for
        self._work_unit = work_unit

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys, args)
        except REDIS_ERRORS as error:
            # Also when the reply was lost after the script ran: the caller decides (settle
            # then records the event itself, idempotently: the ledger is keyed by request id).
            raise AdmissionUnavailable(type(error).__name__) from error

    def admit(self, ticket: Ticket) -> Decision:
        t, k, month = ticket.tenant_id, ticket.key_id, ticket.month
        keys = [
            tenant_key(t, "keys"), tenant_key(t, "status"), tenant_key(t, "buckets"), month_key(t, month),
            tenant_key(t, "inflight"), tenant_key(t, "cfg"), tenant_key(t, "kcfg"), tenant_key(t, f"kb:{k}"),
            tenant_key(t, f"ki:{k}"), key_month_key(t, k, month), tenant_key(t, "grants"),
            tenant_key(t, "credit"), events_stream(t), self._active_key(t),
        ]
        limits = ticket.limits
        args: list[Any] = [
            k, ticket.key_expires_ms, limits.requests_per_minute, limits.tokens_per_minute, limits.monthly_tokens,
            limits.max_concurrent_requests, ticket.tokens, ticket.request_id, self.lease_ms, MONTH_TTL_S,
            _tiers(ticket.pricing), t, month, 0 if ticket.counted else 1,
        ]
        if self.clock_ms is not None:
            args.append(self.clock_ms())
        return _decision(self._call(self._admit, keys, args))

    def count_request(self, ticket: Ticket) -> Decision:
        t, k = ticket.tenant_id, ticket.key_id
        keys = [tenant_key(t, "keys"), tenant_key(t, "status"), tenant_key(t, "buckets"), tenant_key(t, "cfg"),
                tenant_key(t, "kcfg"), tenant_key(t, f"kb:{k}")]
        args: list[Any] = [k, ticket.key_expires_ms, ticket.limits.requests_per_minute,
                           ticket.limits.tokens_per_minute]
        if self.clock_ms is not None:
            args.append(self.clock_ms())
        return _decision(self._call(self._gate, keys, args))

    def settle(self, ticket: Ticket, decision: Decision, *, charge: bool, event: UsageEvent | None = None) -> None:
        t, k, month = ticket.tenant_id, ticket.key_id, ticket.month
        part = stream_part(event.ledger_shard) if event else 0
        keys = [
            tenant_key(t, "inflight"), tenant_key(t, f"ki:{k}"), month_key(t, month), key_month_key(t, k, month),
            tenant_key(t, "credit"), usage_stream(t, part), events_stream(t), tenant_key(t, "cfg"),
            tenant_key(t, "kcfg"), tenant_key(t, "grants"), self._active_key(t),
        ]
        fields: list[str] = []
        for name, value in (event.to_fields() if event else {}).items():
            fields += [name, value]
        now_ms = self.clock_ms() if self.clock_ms is not None else int(time.time() * 1000)
        self._call(self._settle, keys, [ticket.request_id, "charge" if charge else "refund", ticket.tokens,
                                        decision.cost_nano, decision.debits, k, t, month, now_ms,
                                        self._work_unit(t, part), *fields])

    # -- a tenant's state: seeded from DynamoDB, then kept current by the billing API ---------
    def seed(self, state: TenantState, *, month_start_ms: int, month_end_ms: int) -> bool:
        """Write ``state`` unless Redis already holds the tenant (the first seed wins); True
        if this call seeded it."""
        t = state.tenant_id
        keys = [tenant_key(t, "cfg"), tenant_key(t, "status"), tenant_key(t, "keys"), tenant_key(t, "kcfg"),
                month_key(t, state.month), tenant_key(t, "grants"), tenant_key(t, "credit"), usage_stream(t),
                *(key_month_key(t, k, state.month) for k in state.key_ids),
                *(usage_stream(t, part) for part in range(1, STREAM_PARTS))]
        payload = {
            "cfg": _cfg_fields(state.money), "status": "suspended" if state.suspended else "active",
            "key_states": state.key_states,
            "key_cfg": {k: text for k, s in state.key_settings.items() if (text := _key_cfg(s))},
            "key_ids": state.key_ids, "tok": state.tokens, "cost": state.cost_nano,
            "key_months": {k: list(v) for k, v in state.key_months.items()},
            "grants": [[g.id, g.expires_ms or NO_EXPIRY_MS, g.remaining_nano] for g in state.grants],
            "epoch": state.epoch, "fired": state.fired, "key_fired": state.key_fired,
            "low_fired": state.low_fired, "exh_fired": state.exhausted_fired,
            "month_ttl": MONTH_TTL_S, "month_start_ms": month_start_ms, "month_end_ms": month_end_ms,
        }
        return bool(self._call(self._seed, keys, [json.dumps(payload)]))

    def set_money(self, tenant_id: str, money: MoneySettings) -> None:
        fields = [part for pair in _cfg_fields(money).items() for part in pair]
        self._call(self._project, [tenant_key(tenant_id, "cfg"), tenant_key(tenant_id, "cfg")], fields)

    def set_key_settings(self, tenant_id: str, key_id: str, settings: KeySettings) -> None:
        self._call(self._project, [tenant_key(tenant_id, "cfg"), tenant_key(tenant_id, "kcfg")],
                   [key_id, _key_cfg(settings)])

    def add_grant(self, tenant_id: str, grant: Grant) -> None:
        now_ms = self.clock_ms() if self.clock_ms is not None else int(time.time() * 1000)
        self._call(self._grant, [tenant_key(tenant_id, "cfg"), tenant_key(tenant_id, "grants"),
                                 tenant_key(tenant_id, "credit")],
                   [grant.id, grant.expires_ms or NO_EXPIRY_MS, grant.remaining_nano, now_ms])

    def ping(self) -> None:
        self._write(lambda: self.client.ping())

    def money_state(self, tenant_id: str, month: str) -> MoneyState | None:
        """What the tenant has left of each grant and was charged this month, live; None when
        Redis does not hold the tenant (seed it first)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(tenant_key(tenant_id, "cfg"))
        pipe.zrange(tenant_key(tenant_id, "grants"), 0, -1, withscores=True)
        pipe.hgetall(tenant_key(tenant_id, "credit"))
        pipe.hget(month_key(tenant_id, month), "costc")
        try:
            seeded, grants, credit, charged = pipe.execute()
        except REDIS_ERRORS as error:
            raise AdmissionUnavailable(type(error).__name__) from error
        if not seeded:
            return None
        left = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in credit.items()
                if not (k.decode() if isinstance(k, bytes) else k).startswith("_")}
        return MoneyState(
            grants=[Grant((g.decode() if isinstance(g, bytes) else g), 0 if score >= NO_EXPIRY_MS else int(score),
                          left.get(g.decode() if isinstance(g, bytes) else g, 0)) for g, score in grants],
            month_charged_nano=int(charged or 0))

    def set_key_expiry(self, tenant_id: str, key_id: str, expires_ms: int) -> None:
        self._write(lambda: self.client.hset(tenant_key(tenant_id, "keys"), key_id, expires_ms))

    def revoke_key(self, tenant_id: str, key_id: str) -> None:
        self._write(lambda: self.client.hset(tenant_key(tenant_id, "keys"), key_id, 0))

    def set_tenant_status(self, tenant_id: str, status: str) -> None:
        self._write(lambda: self.client.set(tenant_key(tenant_id, "status"), status))

    @staticmethod
    def _write(command: Callable[[], Any]) -> None:
        try:
            command()
        except REDIS_ERRORS as error:
            raise AdmissionUnavailable(type(error).__name__) from error


