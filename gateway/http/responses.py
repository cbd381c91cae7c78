"""HTTP rendering: the ONE place that maps errors to status and OpenAI's error body, and puts
the headers every answer carries (``guarded``), for the resolver's routes and the thin
POST /v1/embeddings path alike.

Nothing of Powertools' event handler loads here: the thin path answers without it (an
``Answer``, made a REST proxy response by ``proxy_response``); the resolver's routes get its
``Response`` from ``json_response``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from gateway.adapters.outages import is_outage
from gateway.errors import Error, ServiceUnavailableError
from gateway.http.ratelimit_headers import ratelimit_headers
from gateway.telemetry import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import Response

JSON = "application/json"


def _plain(value: Any) -> Any:
    # DynamoDB hands numbers back as Decimal; counts are integers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(body: Any) -> str:
    # orjson: a 384-float embedding serialises in ~30 us instead of ~500 us with json.
    return orjson.dumps(body, default=_plain).decode()


@dataclass(slots=True)
class Answer:
    """An answer before its transport: what Powertools' ``Response`` holds for a JSON body,
    headers in the order it keeps them (the caller's, then Content-Type)."""

    status_code: int
    body: str
    headers: dict[str, Any]


class _Answered(Protocol):
    headers: dict[str, Any]


A = TypeVar("A", bound=_Answered)


def json_answer(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    merged: dict[str, Any] = dict(headers or {})
    merged.setdefault("Content-Type", JSON)
    return Answer(status, dumps(body), merged)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Powertools' Response, for the resolver's routes (imported here, not at the top: the thin
    path never loads the event handler; once loaded this is a dictionary lookup)."""
    from aws_lambda_powertools.event_handler import Response

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


def error_answer(error: Error) -> Answer:
    headers = dict(error.headers)
    if error.ratelimit is not None:
        headers |= ratelimit_headers(*error.ratelimit)
    return json_answer(error_body(error), status=error.status, headers=headers)


def guarded(request_id: str, answer: Callable[[], A]) -> A | Answer:
    """``answer()``, or the error it raised rendered through the one mapping; then the headers
    every answer carries. A store the request needs being down is a 503 + Retry-After, never a
    500; anything else unexpected is logged with its traceback and tells the caller nothing."""
    response: A | Answer
    try:
        response = answer()
    except Error as error:
        response = error_answer(error)
    except Exception as error:
        if is_outage(error):
            logger.warning("store unavailable", extra={"error": type(error).__name__})
            response = error_answer(ServiceUnavailableError("A store this request needs is unavailable; "
                                                            "retry shortly."))
        else:
            logger.exception("unhandled error")
            response = error_answer(Error("The server had an error while processing your request."))
    headers = response.headers
    headers["x-request-id"] = request_id
    # Every answer carries a caller's data, a secret or an error about them: never cached,
    # never sniffed into something else.
    headers.setdefault("Cache-Control", "no-store")
    headers["X-Content-Type-Options"] = "nosniff"
    return response


def proxy_response(answer: Answer) -> dict[str, Any]:
    """The REST proxy integration's response, as Powertools' resolver builds it for the same
    answer (the same keys in the same order, every header as a one-value list)."""
    return {"statusCode": answer.status_code, "body": answer.body, "isBase64Encoded": False,
            "multiValueHeaders": {name: [value] for name, value in answer.headers.items()}}

