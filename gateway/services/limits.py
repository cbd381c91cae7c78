"""A tenant's effective limits: its plan's, with the admin's overrides on top."""

from __future__ import annotations

from gateway.adapters.dynamo import Accounts
from gateway.domain.plans import Limits, Plan
from gateway.errors import ServiceUnavailableError
from gateway.models.records import TenantRecord
from gateway.services.cache import TtlCache


class LimitsResolver:
    def __init__(self, accounts: Accounts, *, ttl_s: float = 30.0) -> None:
        self.plans: TtlCache[str, Plan] = TtlCache(ttl_s, accounts.get_plan)

    def plan(self, name: str) -> Plan:
        plan = self.plans.get(name)
        if plan is None:
            # A tenant on a plan that no longer exists is a configuration error, not the caller's.
            raise ServiceUnavailableError(f"plan '{name}' is not configured")
        return plan

    def for_tenant(self, tenant: TenantRecord) -> Limits:
        return tenant.limit_overrides.apply(self.plan(tenant.plan).limits)
