"""What is stored: tenants, keys, usage events, audit entries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.domain.money import fmt
from gateway.domain.plans import BillingMode, Budget, LimitOverrides


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TenantRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    plan: str
    status: Literal["active", "suspended"] = "active"
    limit_overrides: LimitOverrides = Field(default_factory=LimitOverrides)
    billing: BillingMode = Field(default_factory=BillingMode)
    budget: Budget | None = None
    created_at: str
    updated_at: str | None = None


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    tenant_id: str
    name: str | None = None
    scopes: list[str]
    key_hash: str
    created_at: str
    expires_at: str | None = None  # the key's own expiry, as issued (a successor keeps it)
    grace_until: str | None = None  # set by rotation: the key works until then
    revoked_at: str | None = None
    rotated_to: str | None = None
    # Limits and a budget of this key alone, applied on top of its tenant's.
    limits: LimitOverrides = Field(default_factory=LimitOverrides)
    budget: Budget | None = None

    def stops_at(self) -> datetime | None:
        """When the key stops working: its expiry or the end of its rotation grace."""
        moments = [datetime.fromisoformat(v) for v in (self.expires_at, self.grace_until) if v is not None]
        return min(moments) if moments else None

    def expires_ms(self) -> int:
        moment = self.stops_at()
        return 0 if moment is None else int(moment.timestamp() * 1000)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        moment = self.stops_at()
        return "expired" if moment is not None and now >= moment else "active"

    def is_usable(self, now: datetime) -> bool:
        return self.status(now) == "active"

    def public(self, now: datetime) -> dict[str, Any]:
        """The key as admins may see it: never its hash."""
        stops = self.stops_at()
        return {
            "id": self.id,
            "object": "api_key",
            "tenant_id": self.tenant_id,
            "name": self.name,
            "scopes": self.scopes,
            "created_at": self.created_at,
            "expires_at": rfc3339(stops) if stops is not None else None,
            "revoked_at": self.revoked_at,
            "rotated_to": self.rotated_to,
            "status": self.status(now),
            "limits": self.limits.model_dump(exclude_none=True),
            "budget": budget_view(self.budget),
        }


def budget_view(budget: Budget | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {"monthly_amount": fmt(budget.monthly_amount), "hard": budget.hard,
            "alert_thresholds": [float(t) for t in budget.alert_thresholds]}


class CreditGrant(BaseModel):
    """Prepaid credit. What is left of it lives in Redis (debited at admission) and, as what
    was spent, in the usage rollups (the source of truth: remaining = amount - spent)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    tenant_id: str
    amount: Decimal
    currency: str
    expires_at: str | None = None
    note: str | None = None
    created_at: str

    def expires_ms(self) -> int:
        return 0 if self.expires_at is None else int(datetime.fromisoformat(self.expires_at).timestamp() * 1000)
