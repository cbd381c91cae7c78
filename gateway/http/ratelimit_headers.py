"""RateLimit-Policy and RateLimit fields per draft-ietf-httpapi-ratelimit-headers (-11):
one policy for requests, one for tokens (a vendor-prefixed quota unit, since the draft
defines only requests, content-bytes and concurrent-requests), and the key's own when it
has rate limits of its own."""

from __future__ import annotations

from gateway.domain.admission import Decision
from gateway.domain.plans import LimitOverrides, Limits

WINDOW_S = 60


def ratelimit_headers(limits: Limits, decision: Decision, key_limits: LimitOverrides | None = None) -> dict[str, str]:
    policies = [f'"requests";q={limits.requests_per_minute};w={WINDOW_S}',
                f'"tokens";q={limits.tokens_per_minute};w={WINDOW_S};qu="x-tokens"']
    states = [f'"requests";r={decision.requests_remaining};t={decision.requests_reset_s}',
              f'"tokens";r={decision.tokens_remaining};t={decision.tokens_reset_s}']
    if key_limits is not None and key_limits.requests_per_minute and decision.key_requests:
        policies.append(f'"key-requests";q={key_limits.requests_per_minute};w={WINDOW_S}')
        states.append(f'"key-requests";r={decision.key_requests[0]};t={decision.key_requests[1]}')
    if key_limits is not None and key_limits.tokens_per_minute and decision.key_tokens:
        policies.append(f'"key-tokens";q={key_limits.tokens_per_minute};w={WINDOW_S};qu="x-tokens"')
        states.append(f'"key-tokens";r={decision.key_tokens[0]};t={decision.key_tokens[1]}')
    headers = {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states)}
    if not decision.admitted:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers
