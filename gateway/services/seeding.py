"""Seeding: a tenant's admission state rebuilt in Redis from DynamoDB, the source of truth.

Redis holds what admission reads (key states, money settings, the month's counters, what is
left of each credit grant). A tenant whose state Redis does not hold (just created while
Redis was unreachable, or lost with Redis) is seeded before its request is admitted: absent
is never read as zero, so a spent quota, credit or budget stays spent across any loss of
Redis state. The month's charged usage comes from the rollups, what each grant has left from
the rollups' per-grant sums since the grant; usage still on the tenant's stream is added by
the seed script itself (the flusher leaves an unseeded tenant's stream alone meanwhile)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime

from gateway.adapters.dynamo import Accounts, Credits, UsageLedger, sums_of
from gateway.domain.admission import Grant, KeySettings, MoneySettings, TenantProjection, TenantState
from gateway.domain.money import to_nano
from gateway.models.records import KeyRecord


def month_bounds(moment: datetime) -> tuple[date, date, int, int]:
    """First and last day of ``moment``'s UTC month, and its [start, end) in epoch ms."""
    first = moment.date().replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    end = datetime(following.year, following.month, 1, tzinfo=UTC)
    last = date.fromordinal(following.toordinal() - 1)
    return first, last, int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def fired_flags(settings: MoneySettings | KeySettings, charged_nano: int) -> list[str]:
    """The alert flags of the thresholds already crossed by what was charged this month."""
    return [f"fired:{settings.budget_text}:{fraction}" for level, fraction in settings.thresholds
            if level <= charged_nano]


class Seeder:
    def __init__(self, *, accounts: Accounts, usage: UsageLedger, credits: Credits, limiter: TenantProjection,
                 clock: Callable[[], float] = time.time) -> None:
        self.accounts = accounts
        self.usage = usage
        self.credits = credits
        self.limiter = limiter
        self.clock = clock

    def _keys(self, tenant_id: str) -> list[KeyRecord]:
        keys: list[KeyRecord] = []
        cursor = None
        while True:
            page, cursor = self.accounts.list_keys(tenant_id, cursor=cursor, limit=100)
            keys += page
            if not cursor:
                return keys

    def state(self, tenant_id: str) -> TenantState | None:
        """The tenant's admission state as DynamoDB has it (None for an unknown tenant)."""
        tenant = self.accounts.get_tenant(tenant_id, consistent=True)
        if tenant is None:
            return None
        now = datetime.fromtimestamp(self.clock(), UTC)
        first, last, _, _ = month_bounds(now)
        keys = self._keys(tenant_id)
        tokens = cost = 0
        key_months: dict[str, tuple[int, int]] = {}
        for item in self.usage.rollups(tenant_id, first.isoformat(), last.isoformat(), consistent=True):
            sums = sums_of(item)
            tokens, cost = tokens + sums.tokens, cost + sums.cost_nano
            key_id = str(item.get("key_id", ""))
            before = key_months.get(key_id, (0, 0))
            key_months[key_id] = (before[0] + sums.tokens, before[1] + sums.cost_nano)

        grants = self.credits.grants(tenant_id, consistent=True)
        spent: dict[str, int] = {}
        if grants:
            since = min(g.created_at for g in grants)[:10]
            for item in self.usage.rollups(tenant_id, since, last.isoformat(), consistent=True):
                for grant, amount in sums_of(item).grants.items():
                    spent[grant] = spent.get(grant, 0) + amount
        now_ms = int(now.timestamp() * 1000)
        live = [Grant(g.id, g.expires_ms(), to_nano(g.amount) - spent.get(g.id, 0)) for g in grants]
        balance = sum(g.remaining_nano for g in live if not g.expires_ms or g.expires_ms > now_ms)

        money = MoneySettings.of(tenant.billing, tenant.budget)
        settings = {key.id: KeySettings.of(key.limits, key.budget) for key in keys}
        key_states = {key.id: 0 if key.revoked_at else key.expires_ms() for key in keys
                      if key.revoked_at or key.expires_ms()}
        return TenantState(
            tenant_id=tenant_id, month=now.strftime("%Y-%m"), suspended=tenant.status == "suspended", money=money,
            key_states=key_states, key_settings={k: s for k, s in settings.items() if not s.empty},
            key_ids=[key.id for key in keys], tokens=tokens, cost_nano=cost, key_months=key_months, grants=live,
            epoch=grants[-1].id if grants else "", fired=fired_flags(money, cost),
            key_fired={k: fired_flags(s, key_months.get(k, (0, 0))[1]) for k, s in settings.items() if s.thresholds},
            low_fired=money.low_balance_nano is not None and balance < money.low_balance_nano,
            exhausted_fired=money.prepaid and bool(grants) and balance <= 0,
        )

    def seed(self, tenant_id: str) -> bool:
        """Seed the tenant unless Redis holds it already; True if this call seeded it."""
        state = self.state(tenant_id)
        if state is None:
            return False
        _, _, start_ms, end_ms = month_bounds(datetime.fromtimestamp(self.clock(), UTC))
        return self.limiter.seed(state, month_start_ms=start_ms, month_end_ms=end_ms)
