"""The one error hierarchy. Each error knows its HTTP status and OpenAI error fields;
``gateway.http.responses.error_answer`` is the one place that renders them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.domain.admission import Decision
    from gateway.domain.plans import LimitOverrides, Limits


class Error(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    # Headers every error of the class carries unless the raiser gives its own value.
    default_headers: dict[str, str] = {}  # noqa: RUF012 - read only

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        type: str | None = None,  # noqa: A002 - OpenAI's field name
        ratelimit: tuple[Limits, Decision, LimitOverrides] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if type is not None:
            self.type = type
        self.headers = {**self.default_headers, **(headers or {})}
        # The limits and decision of an admission: rendered as RateLimit headers.
        self.ratelimit = ratelimit


class InvalidRequestError(Error):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(Error):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(Error):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFoundError(Error):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PaymentRequiredError(Error):
    """Money: prepaid credit below the request's cost, or a hard budget it would pass."""

    status = 402
    type = "billing_error"
    code = "insufficient_credits"


class ConflictError(Error):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLargeError(Error):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimitError(Error):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class QuotaExceededError(Error):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(Error):
    status = 502
    type = "server_error"
    code = "inference_error"


# A 503 or a 504 is an outage the caller may retry: each says when (CONTRACT.md §7, §10).
RETRY_SOON: dict[str, str] = {"Retry-After": "1"}


class ServiceUnavailableError(Error):
    status = 503
    type = "server_error"
    code = "service_unavailable"
    default_headers = RETRY_SOON


class UpstreamTimeoutError(Error):
    status = 504
    type = "server_error"
    code = "inference_timeout"
    default_headers = RETRY_SOON


class ContainerDeadlineError(UpstreamTimeoutError):
    """The same 504 for the caller, but the container said it: this request's deadline passed
    in its queue. An answer, so the container is there (the breaker stays closed)."""
