"""The emulator's proxy translation (infra/local/apigw/proxy.py) as pure functions: an HTTP
request to a REST proxy event, a proxy result to an HTTP response, the gateway's own errors.
No sockets, no processes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from infra.local.apigw.proxy import (
    MalformedProxyResponse,
    build_event,
    is_binary,
    own_error,
    proxy_response,
)
from infra.local.apigw.routes import Route

ITEM = Route("GET", "/items/{item_id}", "EchoFunction", ("items", "{item_id}"))
NOW = datetime(2026, 11, 29, 12, 30, 5, 123000, tzinfo=UTC)


def event_for(raw_path: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", **kw):  # type: ignore[no-untyped-def]
    params = ITEM.match(raw_path.split("?", 1)[0])
    assert params is not None
    return build_event(ITEM, params, method="get", raw_path=raw_path, headers=headers or [], body=body,
                       request_id="req-1", now=NOW, **kw)


def header(response, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [v for k, v in response.headers if k.lower() == name.lower()]


# ------------------------------------------------------------------------ request -> event


def test_path_query_and_request_context():
    event = event_for("/items/a%20b?tag=x&tag=y&empty=", stage="v1", source_ip="10.0.0.9", port=3000,
                      headers=[("Host", "api.local"), ("User-Agent", "curl/8")])
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/items/{item_id}", "/items/a b", "GET")
    assert event["pathParameters"] == {"item_id": "a b"}
    assert event["queryStringParameters"] == {"tag": "y", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"tag": ["x", "y"], "empty": [""]}
    context = event["requestContext"]
    assert context["path"] == "/v1/items/a b" and context["stage"] == "v1"
    assert context["requestId"] == "req-1"
    assert context["requestTimeEpoch"] == int(NOW.timestamp() * 1000)
    assert context["requestTime"] == "29/Nov/2026:12:30:05 +0000"
    assert context["domainName"] == "api.local"
    assert context["identity"]["sourceIp"] == "10.0.0.9" and context["identity"]["userAgent"] == "curl/8"
    assert event["headers"]["X-Forwarded-Port"] == "3000" and event["headers"]["X-Forwarded-Proto"] == "http"


def test_headers_keep_the_first_spelling_and_the_last_value():
    event = event_for("/items/x", headers=[("X-Multi", "one"), ("x-multi", "two"), ("X-Forwarded-Proto", "https")])
    assert event["headers"]["X-Multi"] == "two"
    assert event["multiValueHeaders"]["X-Multi"] == ["one", "two"]
    assert "x-multi" not in event["headers"]
    assert event["headers"]["X-Forwarded-Proto"] == "https"  # the client's own wins


def test_no_query_no_body_no_headers_are_nulls():
    event = event_for("/items/x")
    for key in ("queryStringParameters", "multiValueQueryStringParameters", "headers", "multiValueHeaders", "body"):
        assert event[key] is None, key
    assert event["isBase64Encoded"] is False


def test_text_body_is_text_and_binary_media_types_are_base64():
    text = event_for("/items/x", [("Content-Type", "application/json")], "{\"a\": \"é\"}".encode())
    assert text["body"] == '{"a": "é"}' and text["isBase64Encoded"] is False
    raw = bytes(range(256))
    binary = event_for("/items/x", [("content-type", "image/png; q=1")], raw, binary_media_types=["image/*"])
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == raw


@pytest.mark.parametrize(("content_type", "types", "expected"), [
    ("application/octet-stream", ["application/octet-stream"], True),
    ("Application/Octet-Stream; charset=x", ["application/octet-stream"], True),
    ("image/png", ["image/*"], True),
    ("text/plain", ["*/*"], True),
    ("application/json", ["application/octet-stream", "image/*"], False),
    ("", ["image/*"], False),
])
def test_binary_media_type_matching(content_type, types, expected):
    assert is_binary(content_type, types) is expected


# ------------------------------------------------------------------------ proxy result -> response


def test_result_headers_multi_values_win_and_request_id_is_added_once():
    response = proxy_response({"statusCode": 201, "headers": {"Set-Cookie": "ignored", "X-One": "1"},
                               "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": "{}"}, "req-9")
    assert response.status == 201
    assert header(response, "Set-Cookie") == ["a=1", "b=2"]
    assert header(response, "X-One") == ["1"]
    assert header(response, "x-request-id") == ["req-9"] and header(response, "x-amzn-RequestId") == ["req-9"]
    assert header(response, "Content-Type") == ["application/json"]  # API Gateway's default
    own = proxy_response({"statusCode": 200, "headers": {"x-request-id": "handler-id"}}, "req-9")
    assert header(own, "x-request-id") == ["handler-id"]  # the handler's own id is not doubled


def test_base64_result_is_decoded_and_missing_body_is_empty():
    raw = bytes(range(256))
    response = proxy_response({"statusCode": 200, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True,
                               "headers": {"Content-Type": "application/octet-stream"}}, "r")
    assert response.body == raw and header(response, "Content-Type") == ["application/octet-stream"]
    assert proxy_response({"statusCode": 204}, "r").body == b""


@pytest.mark.parametrize("result", [
    None, [], "text",
    {"statusCode": 200, "body": {"not": "a string"}},
    {"statusCode": 200, "unexpected": 1},
    {"statusCode": 99},
    {"statusCode": 600},
    {"statusCode": "abc"},
    {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
])
def test_malformed_results_are_refused(result):
    with pytest.raises(MalformedProxyResponse):
        proxy_response(result, "r")


def test_a_result_over_lambdas_6_mb_is_a_bad_gateway_as_in_aws():
    from infra.local.apigw.proxy import LAMBDA_RESPONSE_LIMIT_BYTES, lambda_response_bytes

    def result(body_bytes: int) -> dict:
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "x" * body_bytes}

    envelope = lambda_response_bytes(result(0))
    assert proxy_response(result(LAMBDA_RESPONSE_LIMIT_BYTES - envelope), "r").status == 200
    with pytest.raises(MalformedProxyResponse, match="payload size"):
        proxy_response(result(LAMBDA_RESPONSE_LIMIT_BYTES - envelope + 1), "r")
    # quotes in a JSON body are escaped once more inside the result: they count twice
    assert lambda_response_bytes(result(0) | {"body": '"' * 10}) == envelope + 20


# ------------------------------------------------------------------------ the gateway's own answers


@pytest.mark.parametrize(("status", "code", "type_"), [
    (400, "bad_request", "invalid_request_error"),
    (404, "unknown_route", "invalid_request_error"),
    (408, "request_timeout", "invalid_request_error"),
    (413, "request_too_large", "invalid_request_error"),
    (414, "uri_too_long", "invalid_request_error"),
    (431, "headers_too_large", "invalid_request_error"),
    (501, "not_implemented", "invalid_request_error"),
    (502, None, "server_error"),
    (505, "http_version_not_supported", "invalid_request_error"),
])
def test_own_errors_have_openai_shape_and_a_request_id(status, code, type_):
    response = own_error(status, "req-42")
    assert response.status == status
    error = json.loads(response.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["type"], error["param"]) == (code, type_, None)
    assert error["message"]
    assert header(response, "x-request-id") == ["req-42"]
    assert header(response, "Content-Type") == ["application/json"]


def test_bad_gateway_says_internal_server_error_as_api_gateway_does():
    assert json.loads(own_error(502).body)["error"]["message"] == "Internal server error"


def test_each_own_error_gets_a_fresh_request_id():
    first, second = own_error(404), own_error(404)
    assert header(first, "x-request-id") != header(second, "x-request-id")
    assert header(first, "x-request-id")[0] in json.loads(first.body)["error"]["message"]
