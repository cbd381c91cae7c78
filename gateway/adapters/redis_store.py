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
from typing import Any, Protocol

import redis

from gateway.adapters.active_tenants import ActiveTenants, work_unit
from gateway.adapters.lua_scripts import ADMIT, GATE, GRANT, PROJECT, SEED, SETTLE
from gateway.adapters.redis_keys import STREAM_GROUP as STREAM_GROUP  # the flusher's, named beside the keys
from gateway.adapters.redis_keys import events_stream, key_month_key, month_key, tenant_key, usage_stream
from gateway.adapters.redis_wire import script_for
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
    """admit.lua's and gate.lua's reply (prelude.lua's ``reply``)."""
    (verdict, rq_rem, rq_reset, tk_rem, tk_reset, retry_ms, cost, debits, tiers,
     krq_rem, krq_reset, ktk_rem, ktk_reset, key_holds) = (v.decode() if isinstance(v, bytes) else v for v in reply)
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
        key_holds=key_holds,
    )


class RedisLimiter:
    """The ``Limiter`` of gateway.domain.admission: runs the admission and settlement scripts
    (EVALSHA, reloaded on NOSCRIPT: gateway/adapters/redis_wire.py, or redis-py's Script),
    seeds a tenant's state and projects what the billing API changes. An unreachable Redis is
    ``AdmissionUnavailable``."""

    def __init__(self, client: RedisLike, *, lease_ms: int = 60_000,
                 clock_ms: Callable[[], int] | None = None, wire: bool = True) -> None:
        self.client = client
        self.lease_ms = lease_ms
        # Redis's own clock by default, so every Lambda agrees; tests may drive time.
        self.clock_ms = clock_ms
        # The request path's scripts skip redis-py's generic layers on a plain client (redis_wire).
        self._admit = script_for(client, ADMIT.source, wire=wire)
        self._gate = script_for(client, GATE.source, wire=wire)
        self._settle = script_for(client, SETTLE.source, wire=wire)
        self._seed = client.register_script(SEED.source)
        self._grant = client.register_script(GRANT.source)
        self._project = client.register_script(PROJECT.source)
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
        t, k, month, limits = ticket.tenant_id, ticket.key_id, ticket.month, ticket.limits
        keys = ADMIT.key_list({
            "key_states": tenant_key(t, "keys"), "status": tenant_key(t, "status"),
            "buckets": tenant_key(t, "buckets"), "month": month_key(t, month), "inflight": tenant_key(t, "inflight"),
            "cfg": tenant_key(t, "cfg"), "key_cfg": tenant_key(t, "kcfg"),
            "key_inflight": tenant_key(t, f"ki:{k}"), "key_month": key_month_key(t, k, month),
            "grants": tenant_key(t, "grants"), "credit": tenant_key(t, "credit"), "events": events_stream(t),
            "active": self._active_key(t)})
        args = ADMIT.arg_list({
            "key_id": k, "record_expiry": ticket.key_expires_ms, "rpm": limits.requests_per_minute,
            "tpm": limits.tokens_per_minute, "monthly": limits.monthly_tokens,
            "max_concurrent": limits.max_concurrent_requests, "tokens": ticket.tokens,
            "request_id": ticket.request_id, "lease_ms": self.lease_ms, "month_ttl": MONTH_TTL_S,
            "tiers": _tiers(ticket.pricing), "tenant_id": t, "requests": 0 if ticket.counted else 1,
            "lane": "batch" if ticket.batch else "online", **self._now()})
        return _decision(self._call(self._admit, keys, args))

    def _now(self) -> dict[str, int]:
        """The optional ``now`` of admit and gate: only when tests drive the clock."""
        return {} if self.clock_ms is None else {"now": self.clock_ms()}

    def count_request(self, ticket: Ticket) -> Decision:
        t, k = ticket.tenant_id, ticket.key_id
        keys = GATE.key_list({
            "key_states": tenant_key(t, "keys"), "status": tenant_key(t, "status"),
            "buckets": tenant_key(t, "buckets"), "cfg": tenant_key(t, "cfg"), "key_cfg": tenant_key(t, "kcfg")})
        args = GATE.arg_list({"key_id": k, "record_expiry": ticket.key_expires_ms,
                              "rpm": ticket.limits.requests_per_minute, "tpm": ticket.limits.tokens_per_minute,
                              **self._now()})
        return _decision(self._call(self._gate, keys, args))

    def settle(self, ticket: Ticket, decision: Decision, *, charge: bool, event: UsageEvent | None = None,
               once: str = "") -> None:
        t, k, month = ticket.tenant_id, ticket.key_id, ticket.month
        part = stream_part(event.ledger_shard) if event else 0
        keys = SETTLE.key_list({
            "inflight": tenant_key(t, "inflight"), "key_inflight": tenant_key(t, f"ki:{k}"),
            "month": month_key(t, month), "key_month": key_month_key(t, k, month),
            "credit": tenant_key(t, "credit"), "usage": usage_stream(t, part), "events": events_stream(t),
            "cfg": tenant_key(t, "cfg"), "key_cfg": tenant_key(t, "kcfg"), "grants": tenant_key(t, "grants"),
            "active": self._active_key(t)})
        fields: list[str] = []
        for name, value in (event.to_fields() if event else {}).items():
            fields += [name, value]
        now_ms = self.clock_ms() if self.clock_ms is not None else int(time.time() * 1000)
        args = SETTLE.arg_list({
            "request_id": ticket.request_id, "outcome": "charge" if charge else "refund", "tokens": ticket.tokens,
            "cost": decision.cost_nano, "debits": decision.debits, "key_id": k, "tenant_id": t, "month": month,
            "now": now_ms, "unit": self._work_unit(t, part), "key_holds": decision.key_holds,
            "month_ttl": MONTH_TTL_S, "once": once}, fields)
        self._call(self._settle, keys, args)

    # -- a tenant's state: seeded from DynamoDB, then kept current by the billing API ---------
    def seed(self, state: TenantState, *, month_start_ms: int, month_end_ms: int) -> bool:
        """Write ``state`` unless Redis already holds the tenant (the first seed wins); True
        if this call seeded it."""
        t = state.tenant_id
        keys = SEED.key_list(
            {"cfg": tenant_key(t, "cfg"), "status": tenant_key(t, "status"), "key_states": tenant_key(t, "keys"),
             "key_cfg": tenant_key(t, "kcfg"), "month": month_key(t, state.month), "grants": tenant_key(t, "grants"),
             "credit": tenant_key(t, "credit"), "usage": usage_stream(t)},
            [*(key_month_key(t, k, state.month) for k in state.key_ids),
             *(usage_stream(t, part) for part in range(1, STREAM_PARTS))])
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
        return bool(self._call(self._seed, keys, SEED.arg_list({"state": json.dumps(payload)})))

    def set_money(self, tenant_id: str, money: MoneySettings) -> None:
        fields = [part for pair in _cfg_fields(money).items() for part in pair]
        self._project_into(tenant_id, tenant_key(tenant_id, "cfg"), fields)

    def set_key_settings(self, tenant_id: str, key_id: str, settings: KeySettings) -> None:
        self._project_into(tenant_id, tenant_key(tenant_id, "kcfg"), [key_id, _key_cfg(settings)])

    def _project_into(self, tenant_id: str, target: str, values: list[str]) -> None:
        keys = PROJECT.key_list({"cfg": tenant_key(tenant_id, "cfg"), "target": target})
        self._call(self._project, keys, PROJECT.arg_list({}, values))

    def add_grant(self, tenant_id: str, grant: Grant) -> None:
        now_ms = self.clock_ms() if self.clock_ms is not None else int(time.time() * 1000)
        keys = GRANT.key_list({"cfg": tenant_key(tenant_id, "cfg"), "grants": tenant_key(tenant_id, "grants"),
                               "credit": tenant_key(tenant_id, "credit")})
        self._call(self._grant, keys, GRANT.arg_list({"grant_id": grant.id, "expiry": grant.expires_ms or NO_EXPIRY_MS,
                                                      "amount": grant.remaining_nano, "now": now_ms}))

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


