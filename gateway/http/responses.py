"""HTTP rendering: the ONE place that maps errors to status and OpenAI's error body."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import Response

from gateway.errors import Error

JSON = "application/json"


def _plain(value: Any) -> Any:
    # DynamoDB hands numbers back as Decimal; counts are integers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(body: Any) -> str:
    # orjson: a 384-float embedding serialises in ~30 us instead of ~500 us with json.
    return orjson.dumps(body, default=_plain).decode()


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type=JSON, body=dumps(body), headers=headers or {})


def list_body(items: list[Any], next_cursor: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"object": "list", "data": items, **extra}
    if next_cursor:
        body["next_cursor"] = next_cursor
    return body


def error_body(status_error: Error) -> dict[str, Any]:
    return {
        "error": {
            "message": status_error.message,
            "type": status_error.type,
            "param": status_error.param,
            "code": status_error.code,
        }
    }


def error_response(error: Error) -> Response:
    return json_response(error_body(error), status=error.status, headers=error.headers)


def with_request_id(handler: Callable[[dict, Any], dict]) -> Callable[[dict, Any], dict]:
    """Every response carries ``x-request-id``: API Gateway's request id, which is also the
    id the usage ledger keeps, so a tenant's support ticket leads straight to its charge."""

    @wraps(handler)
    def wrapper(event: dict, context: Any) -> dict:
        result = handler(event, context)
        request_id = (event.get("requestContext") or {}).get("requestId")
        if request_id and isinstance(result, dict):
            result.setdefault("headers", {})
            result["headers"]["x-request-id"] = request_id
            if result.get("multiValueHeaders") is not None:
                result["multiValueHeaders"]["x-request-id"] = [request_id]
        return result

    return wrapper
