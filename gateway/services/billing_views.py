"""How the billing API shows its records (plans, tenants, keys, credit grants) and reads the amounts a
request carries (a clear 400 naming the field when one is not a valid amount of the currency)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.domain.money import AmountError, fmt, fmt_nano, parse_amount
from gateway.domain.plans import Budget, Plan
from gateway.errors import InvalidRequestError
from gateway.models.api import BudgetBody
from gateway.models.records import CreditGrant, KeyRecord, TenantRecord, budget_view, utcnow
from gateway.services.limits import LimitsResolver


def plan_view(plan: Plan) -> dict[str, Any]:
    prices: dict[str, Any] = {model: {"price_per_1k_tokens": fmt(price)}
                              for model, price in plan.price_per_1k_tokens.items()}
    prices |= {model: {"tiers": [{"up_to": t.up_to, "price_per_1k_tokens": fmt(t.price_per_1k_tokens)}
                                 for t in tiers]} for model, tiers in plan.tiers.items()}
    return {
        "id": plan.name,
        "object": "plan",
        "description": plan.description,
        "currency": plan.currency,
        "limits": plan.limits.model_dump(),
        "price_per_1k_tokens": {model: format(price, "f") for model, price in plan.price_per_1k_tokens.items()},
        "prices": prices,
    }


def key_view(key: KeyRecord, now: datetime | None = None) -> dict[str, Any]:
    """A key as admins see it: never its hash nor its secret."""
    return key.public(now or utcnow())


def grant_view(grant: CreditGrant, remaining_nano: int | None) -> dict[str, Any]:
    return {"id": grant.id, "object": "credit_grant", "tenant_id": grant.tenant_id, "amount": fmt(grant.amount),
            "remaining": fmt_nano(remaining_nano) if remaining_nano is not None else fmt(grant.amount),
            "currency": grant.currency, "expires_at": grant.expires_at, "note": grant.note,
            "created_at": grant.created_at}


def amount_of(value: str | None, *, field: str, currency: str, allow_zero: bool = False) -> Decimal:
    try:
        return parse_amount(value, currency=currency, allow_zero=allow_zero)
    except AmountError as error:
        raise InvalidRequestError(f"'{field}' {error}.", param=field) from None


def budget_of(body: BudgetBody, field: str, currency: str) -> Budget:
    amount = amount_of(body.monthly_amount, field=f"{field}.monthly_amount", currency=currency)
    return Budget(monthly_amount=amount, hard=body.hard,
                  alert_thresholds=[Decimal(str(t)) for t in body.alert_thresholds])


def tenant_view(tenant: TenantRecord, limits: LimitsResolver) -> dict[str, Any]:
    """A tenant as admins see it: its effective limits (plan + overrides) and money settings."""
    plan = limits.plan(tenant.plan)
    low = tenant.billing.low_balance_alert
    return {
        "id": tenant.id,
        "object": "tenant",
        "name": tenant.name,
        "plan": tenant.plan,
        "status": tenant.status,
        "limits": limits.for_tenant(tenant).model_dump(),
        "limit_overrides": tenant.limit_overrides.model_dump(exclude_none=True),
        "currency": plan.currency,
        "billing": {"mode": tenant.billing.mode, "low_balance_alert": fmt(low) if low is not None else None},
        "budget": budget_view(tenant.budget),
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
    }
