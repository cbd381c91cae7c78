"""The Lambda proxy integration, as pure functions: an HTTP request becomes the REST proxy
event API Gateway sends, a proxy result becomes the HTTP response, and what API Gateway
answers by itself (404, 413, 502, protocol errors) is built here in OpenAI's error shape.

No sockets, no processes, no clock or randomness unless not given: unit-tested as is."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.local.apigw.routes import Route

ACCOUNT_ID = "123456789012"  # placeholder, as sam local uses; never a real account
API_ID = "1234567890"
REGION = "us-east-1"

Headers = list[tuple[str, str]]


@dataclass
class Response:
    status: int
    headers: Headers
    body: bytes


class MalformedProxyResponse(ValueError):
    """A handler returned something API Gateway would answer 502 for."""


def new_request_id() -> str:
    return str(uuid.uuid4())


# -------------------------------------------------------------------- request -> proxy event


def is_binary(content_type: str, binary_media_types: Iterable[str]) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    for t in binary_media_types:
        t = t.lower()
        if t == "*/*" or t == mime or (t.endswith("/*") and mime.startswith(t[:-1])):
            return True
    return False


def _header(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def build_event(
    route: Route,
    path_params: dict[str, str],
    *,
    method: str,
    raw_path: str,
    headers: Headers,
    body: bytes,
    stage: str = "local",
    binary_media_types: Sequence[str] = (),
    source_ip: str = "127.0.0.1",
    protocol: str = "HTTP/1.1",
    port: int | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The REST API (v1) Lambda proxy event for one request, as API Gateway builds it."""
    url = urlsplit(raw_path)
    path = unquote(url.path) or "/"
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    lower_seen: dict[str, str] = {}
    for name, value in headers:
        key = lower_seen.setdefault(name.lower(), name)  # first spelling wins
        single_headers[key] = value  # API Gateway keeps the last value
        multi_headers.setdefault(key, []).append(value)
    if port is not None:
        for name, value in (("X-Forwarded-Proto", "http"), ("X-Forwarded-Port", str(port))):
            if name.lower() not in lower_seen:
                single_headers[name] = value
                multi_headers[name] = [value]

    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for k, v in parse_qsl(url.query, keep_blank_values=True):
        query[k] = v
        multi_query.setdefault(k, []).append(v)

    is_b64 = is_binary(_header(headers, "content-type") or "", binary_media_types)
    if not body:
        body_field: str | None = None
    elif is_b64:
        body_field = base64.b64encode(body).decode("ascii")
    else:
        body_field = body.decode("utf-8", errors="replace")

    now = now or datetime.now(UTC)
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "123456",
            "resourcePath": route.resource,
            "httpMethod": method.upper(),
            "extendedRequestId": None,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": protocol,
            "stage": stage,
            "domainName": _header(headers, "host") or "localhost",
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id or new_request_id(),
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": None,
                "sourceIp": source_ip,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": _header(headers, "user-agent"),
                "user": None,
            },
            "apiId": API_ID,
        },
        "body": body_field,
        "isBase64Encoded": is_b64,
    }


# -------------------------------------------------------------------- proxy result -> response

_RESULT_KEYS = {"statusCode", "body", "headers", "multiValueHeaders", "isBase64Encoded", "cookies"}
# Lambda returns at most 6 MB from a synchronous invocation, measured on the result as the
# Python runtime serialises it (json.dumps); over it the invocation fails and API Gateway says 502.
LAMBDA_RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024


def lambda_response_bytes(result: Any) -> int:
    """The size Lambda measures a handler's result at."""
    return len(json.dumps(result).encode())


def _request_headers(request_id: str) -> Headers:
    return [("x-amzn-RequestId", request_id), ("x-request-id", request_id)]


def proxy_response(result: Any, request_id: str) -> Response:
    """The HTTP response for a handler's proxy result; MalformedProxyResponse where API
    Gateway would answer 502. The handler's own x-request-id, if any, wins."""
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"expected a dict, got {type(result).__name__}")
    if lambda_response_bytes(result) > LAMBDA_RESPONSE_LIMIT_BYTES:
        raise MalformedProxyResponse("Response payload size exceeded maximum allowed payload size")
    extra = set(result) - _RESULT_KEYS
    if extra:
        raise MalformedProxyResponse(f"unexpected keys {sorted(extra)}")
    try:
        status = int(result.get("statusCode") or 200)
    except (TypeError, ValueError):
        raise MalformedProxyResponse("statusCode is not an integer") from None
    if not 100 <= status <= 599:
        raise MalformedProxyResponse(f"bad statusCode {status}")
    merged: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        spelled.setdefault(name.lower(), name)
        merged.setdefault(name.lower(), []).extend(str(v) for v in values)
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in merged:  # multiValueHeaders win for the same name
            spelled.setdefault(name.lower(), name)
            merged[name.lower()] = [str(value)]
    raw_body = result.get("body")
    if raw_body is None:
        body = b""
    elif not isinstance(raw_body, str):
        raise MalformedProxyResponse("body must be a string")
    elif result.get("isBase64Encoded") in (True, "true", "True"):
        try:
            body = base64.b64decode(raw_body, validate=True)
        except ValueError:
            raise MalformedProxyResponse("body is not valid base64") from None
    else:
        body = raw_body.encode("utf-8")
    base = [("x-amzn-RequestId", request_id)]
    if "x-request-id" not in merged:
        base.append(("x-request-id", request_id))
    headers = [(spelled[k], v) for k, vs in merged.items() for v in vs]
    if "content-type" not in merged:
        headers.append(("Content-Type", "application/json"))  # API Gateway's default
    return Response(status, [*base, *headers], body)


# -------------------------------------------------------------------- API Gateway's own answers

# status -> (message, code, type). Fixed texts: an error never echoes the request back.
_OWN_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("The request is not valid HTTP/1.1", "bad_request", "invalid_request_error"),
    404: ("No route matches this method and path", "unknown_route", "invalid_request_error"),
    408: ("The request was not received in time", "request_timeout", "invalid_request_error"),
    411: ("A request body needs a Content-Length or chunked Transfer-Encoding", "length_required",
          "invalid_request_error"),
    413: ("Request body too large", "request_too_large", "invalid_request_error"),
    414: ("The request line is too long", "uri_too_long", "invalid_request_error"),
    431: ("The request headers are too large", "headers_too_large", "invalid_request_error"),
    501: ("This method or transfer coding is not implemented", "not_implemented", "invalid_request_error"),
    502: ("Internal server error", None, "server_error"),
    503: ("The function's execution environment was lost; retry", "service_unavailable", "server_error"),
    505: ("Only HTTP/1.0 and HTTP/1.1 are supported", "http_version_not_supported", "invalid_request_error"),
}


def error_body(message: str, code: str | None, type_: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


# What the template's GatewayResponses put on every answer of the gateway's own.
GATEWAY_RESPONSE_HEADERS = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]


def own_error(status: int, request_id: str | None = None, *, message: str | None = None) -> Response:
    """What the gateway answers by itself for `status`, in OpenAI's error shape."""
    request_id = request_id or new_request_id()
    default, code, type_ = _OWN_ERRORS.get(status, _OWN_ERRORS[400])
    text = message or default
    if type_ != "server_error":  # as the template's gateway responses do: the id to quote
        text = f"{text} (request {request_id})"
    headers = [*_request_headers(request_id), ("Content-Type", "application/json"), *GATEWAY_RESPONSE_HEADERS]
    return Response(status, headers, error_body(text, code, type_))


def route_not_found(request_id: str | None = None) -> Response:
    return own_error(404, request_id)


def payload_too_large(request_id: str | None = None) -> Response:
    return own_error(413, request_id)


def bad_gateway(request_id: str | None = None) -> Response:
    # What the template's DEFAULT_5XX gateway response makes of API Gateway's
    # {"message": "Internal server error"}: the same text in OpenAI's shape.
    return own_error(502, request_id)


def copy_lost(request_id: str | None = None) -> Response:
    """A function copy killed under its request (kill -9 of a worker, as a host failure would):
    an outage the caller may retry, so 503 + Retry-After (CONTRACT.md §10), never a 5xx
    without one. A copy that exits by itself (a bug) stays a 502."""
    response = own_error(503, request_id)
    response.headers.append(("Retry-After", "1"))
    return response
