"""RateLimit-Policy and RateLimit fields per draft-ietf-httpapi-ratelimit-headers (-11):
one policy for requests, one for tokens (a vendor-prefixed quota unit, since the draft
defines only requests, content-bytes and concurrent-requests)."""

from __future__ import annotations

from gateway.domain.admission import Decision
from gateway.domain.plans import Limits

WINDOW_S = 60


def ratelimit_headers(limits: Limits, decision: Decision) -> dict[str, str]:
    headers = {
        "RateLimit-Policy": (
            f'"requests";q={limits.requests_per_minute};w={WINDOW_S}, '
            f'"tokens";q={limits.tokens_per_minute};w={WINDOW_S};qu="x-tokens"'
        ),
        "RateLimit": (
            f'"requests";r={decision.requests_remaining};t={decision.requests_reset_s}, '
            f'"tokens";r={decision.tokens_remaining};t={decision.tokens_reset_s}'
        ),
    }
    if not decision.admitted:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers
