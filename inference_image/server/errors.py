"""One error hierarchy: each error names its status, headers and body (``error_body``); ONE
place (``error_response`` in inference_image/server/http.py, the transport) turns it into a
response. This module imports nothing of the server's: every layer may raise these.

Every body has OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json


class InferenceError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(InferenceError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class NotFoundError(InferenceError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class MethodNotAllowedError(InferenceError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(InferenceError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnavailableError(InferenceError):
    """Not ready yet, or draining after SIGTERM."""

    status = 503
    type = "server_error"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: str | None):
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class OverloadedError(UnavailableError):
    code = "overloaded"


class DeadlineExceededError(InferenceError):
    status = 504
    type = "server_error"
    code = "timeout"


class ComputeError(InferenceError):
    """The model failed on this request's items (never on a batch-mate's behalf)."""

    code = "compute_error"


def error_body(exc: InferenceError) -> bytes:
    return json.dumps(
        {"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                   "code": exc.code}},
        ensure_ascii=False,
    ).encode()
