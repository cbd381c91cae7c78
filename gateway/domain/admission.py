"""Admission: the port every limiter implements, and the values that cross it.

A request is admitted (or refused) in one atomic step before inference and settled in one
step after it: charged (its usage recorded) or refunded. ``RedisLimiter`` is the real
implementation (one Lua script each way); ``LocalLimiter`` holds a container's rates while
Redis is unreachable. Both pass the same contract tests (tests/integration/test_limiter_contract.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from gateway.domain.money import Tiers, fmt, to_nano
from gateway.domain.plans import BillingMode, Budget, LimitOverrides, Limits
from gateway.domain.usage import UsageEvent


class Verdict(enum.StrEnum):
    OK = "ok"
    UNSEEDED = "unseeded"  # the limiter does not hold this tenant's state: seed it, then ask again
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    SUSPENDED = "suspended"
    QUOTA = "quota"
    KEY_QUOTA = "key_quota"
    CREDITS = "credits"
    BUDGET = "budget"
    KEY_BUDGET = "key_budget"
    REQUESTS = "requests"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"
    KEY_REQUESTS = "key_requests"
    KEY_TOKENS = "key_tokens"
    KEY_CONCURRENCY = "key_concurrency"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What admission needs to know about one request. The key's own limits and budget and
    the tenant's money settings are not here: the limiter holds them (projected by the billing
    API), so a change bites on the next request."""

    tenant_id: str
    key_id: str
    key_expires_ms: int  # 0 = never
    limits: Limits  # the tenant's effective limits
    tokens: int
    request_id: str
    month: str  # YYYY-MM, UTC
    pricing: Tiers = ((None, 0),)  # the model's price: (up to this many tokens of the month, nano per token)
    counted: bool = False  # count_request already took this request from the request buckets
    batch: bool = False  # a whole batch's reservation: money and quota only, no buckets, no lease


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    requests_remaining: int
    requests_reset_s: int
    tokens_remaining: int
    tokens_reset_s: int
    retry_after_s: int
    cost_nano: int = 0  # what the request costs, fixed at admission
    debits: str = ""  # the credit it took, "grant:nano,..." (given back on refund)
    tier_tokens: tuple[int, ...] = ()  # its tokens in each price tier
    # The key's own rate limits, when it has any (None otherwise).
    key_requests: tuple[int, int] | None = None  # remaining, reset s
    key_tokens: tuple[int, int] | None = None
    key_holds: str = ""  # what admission holds on the key's own counters, for settle: "m" its month, "l" a lease
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

    def count_request(self, ticket: Ticket) -> Decision:
        """The cheap checks alone: key state and suspension, then one request from the request
        buckets (taken only if every check passes). ``ticket.tokens`` is not looked at."""
        ...

    def settle(self, ticket: Ticket, decision: Decision, *, charge: bool, event: UsageEvent | None = None,
               once: str = "") -> None:
        """Release the request's concurrency slots; keep the charge and record ``event``, or
        give back everything ``decision`` took. A non-empty ``once`` settles at most once
        under that name (a batch's chunk, settled again by a resumed worker)."""
        ...


# -- what the limiter holds about a tenant (projected by the billing API, seeded from DynamoDB) --
Thresholds = tuple[tuple[int, str], ...]  # (alert level in nano, the fraction as text)


def alert_levels(budget: Budget | None) -> Thresholds:
    """Each alert threshold of a budget as an exact level in nano units (rounded up)."""
    if budget is None:
        return ()
    amount = Decimal(to_nano(budget.monthly_amount))
    return tuple((int((amount * t).to_integral_value(rounding=ROUND_CEILING)), fmt(t)) for t in budget.alert_thresholds)


@dataclass(frozen=True, slots=True)
class MoneySettings:
    """A tenant's money controls."""

    prepaid: bool = False
    budget_nano: int | None = None
    hard: bool = False
    budget_text: str = ""
    thresholds: Thresholds = ()
    low_balance_nano: int | None = None

    @classmethod
    def of(cls, billing: BillingMode, budget: Budget | None) -> MoneySettings:
        return cls(prepaid=billing.mode == "prepaid",
                   budget_nano=to_nano(budget.monthly_amount) if budget else None,
                   hard=bool(budget and budget.hard), budget_text=fmt(budget.monthly_amount) if budget else "",
                   thresholds=alert_levels(budget),
                   low_balance_nano=to_nano(billing.low_balance_alert) if billing.low_balance_alert else None)


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A key's own limits and budget, on top of its tenant's."""

    limits: LimitOverrides = LimitOverrides()
    budget_nano: int | None = None
    hard: bool = False
    budget_text: str = ""
    thresholds: Thresholds = ()

    @classmethod
    def of(cls, limits: LimitOverrides, budget: Budget | None) -> KeySettings:
        return cls(limits=limits, budget_nano=to_nano(budget.monthly_amount) if budget else None,
                   hard=bool(budget and budget.hard), budget_text=fmt(budget.monthly_amount) if budget else "",
                   thresholds=alert_levels(budget))

    @property
    def empty(self) -> bool:
        return self.budget_nano is None and not self.limits.model_dump(exclude_none=True)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    expires_ms: int  # 0 = never
    remaining_nano: int


@dataclass(frozen=True, slots=True)
class TenantState:
    """Everything admission needs about a tenant, rebuilt from DynamoDB: its settings, its
    keys' state, and what it was charged this month (tokens, cost, per key, per grant)."""

    tenant_id: str
    month: str
    suspended: bool
    money: MoneySettings
    key_states: dict[str, int]  # key id -> expiry ms (0 = revoked), for keys that expire or are revoked
    key_settings: dict[str, KeySettings]
    key_ids: list[str]
    tokens: int
    cost_nano: int
    key_months: dict[str, tuple[int, int]]  # key id -> (tokens, cost nano) this month
    grants: list[Grant]
    epoch: str  # the newest grant's id: alerts about credit run once per grant
    fired: list[str] = field(default_factory=list)  # budget thresholds already alerted this month
    key_fired: dict[str, list[str]] = field(default_factory=dict)
    low_fired: bool = False
    exhausted_fired: bool = False

    @classmethod
    def empty(cls, tenant_id: str, month: str) -> TenantState:
        """A tenant with nothing charged, no keys with state, no credit: a new one."""
        return cls(tenant_id=tenant_id, month=month, suspended=False, money=MoneySettings(), key_states={},
                   key_settings={}, key_ids=[], tokens=0, cost_nano=0, key_months={}, grants=[], epoch="")


# -- the limiter's tenant state, as the billing API and seeding drive it -----------------------
class MoneyReading(Protocol):
    """What a tenant has left of each grant and was charged this month, read live."""

    @property
    def grants(self) -> list[Grant]: ...

    @property
    def month_charged_nano(self) -> int: ...

    def credits_remaining(self, now_ms: int) -> int: ...


class TenantProjection(Protocol):
    """What the billing API and seeding need of the limiter beyond ``Limiter``: seed a tenant's
    state, project each admin change into it, read its money back. ``RedisLimiter`` is both;
    an unreachable store is ``AdmissionUnavailable`` here too."""

    def seed(self, state: TenantState, *, month_start_ms: int, month_end_ms: int) -> bool:
        """Write ``state`` unless the limiter holds the tenant already; True if this call did."""
        ...

    def set_tenant_status(self, tenant_id: str, status: str) -> None: ...
    def set_key_expiry(self, tenant_id: str, key_id: str, expires_ms: int) -> None: ...
    def revoke_key(self, tenant_id: str, key_id: str) -> None: ...
    def set_money(self, tenant_id: str, money: MoneySettings) -> None: ...
    def set_key_settings(self, tenant_id: str, key_id: str, settings: KeySettings) -> None: ...
    def add_grant(self, tenant_id: str, grant: Grant) -> None: ...

    def money_state(self, tenant_id: str, month: str) -> MoneyReading | None:
        """None when the limiter does not hold the tenant (seed it first)."""
        ...

    def ping(self) -> None:
        """``AdmissionUnavailable`` unless the store answers."""
        ...
