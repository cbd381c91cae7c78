"""The request gate, and what every refusal of the limiter says to the caller.

The hot path runs the cheap checks before the expensive work: the key (parsed, then its hash
checked), its state in Redis (revoked, expired, suspended), one request from the tenant's
request bucket, then the body, tokenization and token admission. On success that is two
round trips, admit and settle, because admit.lua makes the gate's checks in the same step.
The gate (gate.lua) is the same checks and the request alone, taken where admission does not
come first: before a large body is parsed and tokenized, for a request refused with a 4xx
before admission (so it still costs a request, and a revoked key gets its 401, not a 400),
and on the tenant's read routes (models, usage, balance, keys)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from gateway.domain.admission import AdmissionUnavailable, Decision, Limiter, Ticket, Verdict
from gateway.domain.plans import LimitOverrides, Limits
from gateway.errors import (
    RETRY_SOON,
    AuthenticationError,
    Error,
    PaymentRequiredError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)
from gateway.services.auth import Principal
from gateway.services.limits import LimitsResolver
from gateway.services.seeding import Seeder
from gateway.telemetry import logger


class RequestGate:
    def __init__(self, *, limiter: Limiter, limits: LimitsResolver, seeder: Seeder) -> None:
        self.limiter = limiter
        self.limits = limits
        self.seeder = seeder

    def count(self, principal: Principal, request_id: str) -> Decision | None:
        """Count one request of ``principal``, or raise its refusal (401, 403, 429). None when
        the limiter cannot be reached: the caller falls back (admission then decides, or a
        read route reads the key record fresh)."""
        limits = self.limits.for_tenant(principal.tenant)
        ticket = Ticket(tenant_id=principal.tenant.id, key_id=principal.key.id,
                        key_expires_ms=principal.key.expires_ms(), limits=limits, tokens=0,
                        request_id=request_id, month=datetime.now(UTC).strftime("%Y-%m"))
        try:
            decision = self.decide(lambda: self.limiter.count_request(ticket), ticket.tenant_id)
        except AdmissionUnavailable:
            return None
        raise_unless_admitted(decision, limits, principal.key.limits)
        return decision

    def decide(self, attempt: Callable[[], Decision], tenant_id: str) -> Decision:
        """``attempt`` (an admission or a count), after seeding the tenant's state from
        DynamoDB if the limiter does not hold it. AdmissionUnavailable when Redis is gone."""
        decision = attempt()
        if decision.verdict is Verdict.UNSEEDED:
            self._seed(tenant_id)
            decision = attempt()
        if decision.verdict is Verdict.UNSEEDED:
            raise ServiceUnavailableError("This tenant's usage cannot be checked right now; retry shortly.",
                                          headers=RETRY_SOON)
        return decision

    def _seed(self, tenant_id: str) -> None:
        """Rebuild the tenant's state from DynamoDB; if DynamoDB cannot say, nothing is admitted."""
        try:
            self.seeder.seed(tenant_id)
        except AdmissionUnavailable:
            raise
        except Exception as error:
            logger.exception("tenant state could not be seeded", extra={"tenant_id": tenant_id})
            raise ServiceUnavailableError("This tenant's usage cannot be checked right now; retry shortly.",
                                          headers=RETRY_SOON) from error


_RATE_LIMITS = {
    Verdict.REQUESTS: ("requests per minute", "requests"), Verdict.TOKENS: ("tokens per minute", "tokens"),
    Verdict.CONCURRENCY: ("concurrent requests", "requests"),
    Verdict.KEY_REQUESTS: ("this key's requests per minute", "requests"),
    Verdict.KEY_TOKENS: ("this key's tokens per minute", "tokens"),
    Verdict.KEY_CONCURRENCY: ("this key's concurrent requests", "requests"),
}


def raise_unless_admitted(decision: Decision, limits: Limits, key_limits: LimitOverrides) -> None:
    ratelimit = (limits, decision, key_limits)
    error: Error
    match decision.verdict:
        case Verdict.OK:
            return
        case Verdict.KEY_REVOKED | Verdict.KEY_EXPIRED:
            error = AuthenticationError("This API key has been revoked or has expired.", code="key_inactive")
        case Verdict.SUSPENDED:
            error = PermissionDeniedError("This tenant is suspended.", code="tenant_suspended")
        case Verdict.QUOTA:
            error = QuotaExceededError(
                "You exceeded your monthly token quota; ask your administrator to raise it.", ratelimit=ratelimit)
        case Verdict.KEY_QUOTA:
            error = QuotaExceededError(
                "This API key exceeded its monthly token quota; ask your administrator to raise it.",
                ratelimit=ratelimit)
        case Verdict.CREDITS:
            error = PaymentRequiredError("Your prepaid credit is below this request's cost; add credit to continue.",
                                         code="insufficient_credits")
        case Verdict.BUDGET:
            error = PaymentRequiredError("This request would take the month's cost past the budget.",
                                         code="budget_exceeded")
        case Verdict.KEY_BUDGET:
            error = PaymentRequiredError("This request would take this API key's month past its budget.",
                                         code="budget_exceeded")
        case _:
            limit, kind = _RATE_LIMITS[decision.verdict]
            error = RateLimitError(f"Rate limit reached for {limit}; retry after {decision.retry_after_s} s.",
                                   type=kind, ratelimit=ratelimit)
    raise error
