"""The API Gateway emulator (infra/local/apigw/) against a fixture template and handler.

Only loopback HTTP: the emulator runs on a free port in a thread of the test process."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infra.local.apigw import ApiGatewayEmulator, build_app, load_template, read_routes, serve

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "apigw" / "template.yaml"
SAMPLES = sorted((ROOT / "events").glob("*/*.json"))
# Only the samples of API Gateway requests (not the schedules', the stream's or the bus's events).
API_SAMPLES = [p for p in SAMPLES if "httpMethod" in json.loads(p.read_text())]


@pytest.fixture(scope="module")
def server():
    app = build_app(FIXTURE, max_copies=4)
    srv = serve(app, "127.0.0.1", 0, block=False)
    yield srv
    srv.shutdown()
    srv.server_close()
    app.close()


def request(
    server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def echo(server, method: str, path: str, **kw: Any) -> dict[str, Any]:
    status, headers, body = request(server, method, path, **kw)
    assert status == 200, body
    return json.loads(body)


def shape(value: Any) -> Any:
    """Keys and types of a JSON value; None stands for "absent or null"."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None if value is None else type(value).__name__


def assert_same_shape(actual: Any, recorded: Any, where: str = "event") -> None:
    if actual is None or recorded is None:
        return  # e.g. queryStringParameters: null when a request has none
    assert type(actual) is type(recorded), f"{where}: {type(actual).__name__} != {type(recorded).__name__}"
    if isinstance(actual, dict):
        free_form = where.endswith(("headers", "Headers", "Parameters", "pathParameters", "stageVariables"))
        if not free_form:
            assert set(actual) == set(recorded), f"{where}: keys differ: {set(actual) ^ set(recorded)}"
            for k in actual:
                assert_same_shape(actual[k], recorded[k], f"{where}.{k}")
        else:
            for k, v in actual.items():  # header/query names vary; values are str or [str]
                expected = str if not isinstance(v, list) else list
                assert isinstance(v, expected), f"{where}.{k}"


# ------------------------------------------------------------------------ the recorded samples


@pytest.mark.parametrize("sample", API_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_samples_are_rest_proxy_events_for_template_routes(sample: Path):
    # GIVEN a recorded event, WHEN compared with the real template's routes
    event = json.loads(sample.read_text())
    routes = {(r.method, r.resource): r.function_id for r in read_routes(load_template(ROOT / "template.yaml"))}
    # THEN it targets a declared route of the function named by its folder
    fn = routes[(event["httpMethod"], event["resource"])]
    assert fn.lower() == f"{sample.parent.name}function"
    assert event["requestContext"]["resourcePath"] == event["resource"]
    assert event["requestContext"]["accountId"] == "123456789012"  # placeholder, never a real one
    assert isinstance(event["requestContext"]["requestTimeEpoch"], int)
    assert event["isBase64Encoded"] is False
    if event["body"] is not None:
        json.loads(event["body"])


def test_scheduled_sample_is_an_eventbridge_event():
    event = json.loads((ROOT / "events" / "flusher" / "scheduled.json").read_text())
    assert event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
    assert event["account"] == "123456789012"


@pytest.mark.parametrize("sample", API_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_emulator_event_has_the_shape_of_the_samples(server, sample: Path):
    recorded = json.loads(sample.read_text())
    body = recorded["body"].encode() if recorded["body"] else None
    method = "POST" if body else "GET"
    got = echo(server, method, "/echo?x=1", body=body, headers={"Content-Type": "application/json"})
    event = got["event"]
    assert set(event) == set(recorded)
    assert_same_shape(event, recorded)


# ------------------------------------------------------------------------ event contents


def test_path_and_query_parameters(server):
    event = echo(server, "GET", "/items/it%20em-7?tag=a&tag=b&empty=&q=x%2By+z")["event"]
    assert event["resource"] == "/items/{item_id}"
    assert event["path"] == "/items/it em-7"
    assert event["pathParameters"] == {"item_id": "it em-7"}
    assert event["queryStringParameters"] == {"tag": "b", "empty": "", "q": "x+y z"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "empty": [""], "q": ["x+y z"]}
    assert event["requestContext"]["resourcePath"] == "/items/{item_id}"
    assert event["requestContext"]["path"] == "/local/items/it em-7"  # /{stage}{path}, as in AWS


def test_static_segment_beats_path_parameter(server):
    assert echo(server, "GET", "/items/special")["event"]["resource"] == "/items/special"
    assert echo(server, "GET", "/items/other")["event"]["pathParameters"] == {"item_id": "other"}


def test_greedy_parameter_and_any_method(server):
    event = echo(server, "PUT", "/files/a/b/c.txt", body=b"x")["event"]
    assert event["resource"] == "/files/{path+}"
    assert event["pathParameters"] == {"path": "a/b/c.txt"}
    assert event["httpMethod"] == "PUT"


def test_no_query_no_body_give_nulls(server):
    event = echo(server, "GET", "/echo")["event"]
    for key in ("queryStringParameters", "multiValueQueryStringParameters", "pathParameters", "body"):
        assert event[key] is None, key
    assert event["isBase64Encoded"] is False


def test_headers_single_and_multi_value(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("GET", "/echo")
    conn.putheader("X-Multi", "one")
    conn.putheader("X-Multi", "two")
    conn.putheader("Authorization", "Bearer abc")
    conn.endheaders()
    resp = conn.getresponse()
    event = json.loads(resp.read())["event"]
    conn.close()
    assert event["headers"]["X-Multi"] == "two"  # API Gateway keeps the last value
    assert event["multiValueHeaders"]["X-Multi"] == ["one", "two"]
    assert event["headers"]["Authorization"] == "Bearer abc"
    assert event["headers"]["X-Forwarded-Port"] == str(port)


def test_json_body_passes_as_text(server):
    payload = {"model": "m", "input": ["héllo"]}
    body = json.dumps(payload).encode()
    event = echo(server, "POST", "/echo", body=body, headers={"Content-Type": "application/json"})["event"]
    assert json.loads(event["body"]) == payload
    assert event["isBase64Encoded"] is False


def test_binary_media_type_body_is_base64(server):
    raw = bytes(range(256))
    event = echo(server, "POST", "/echo", body=raw, headers={"Content-Type": "application/octet-stream"})["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_lambda_context(server):
    got = echo(server, "GET", "/echo")
    ctx = got["context"]
    assert ctx["function_name"] == "EchoFunction"
    assert ctx["memory_limit_in_mb"] == 256
    assert ctx["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:EchoFunction"
    assert 0 < ctx["remaining_ms"] <= 5000  # Globals Timeout: 5
    assert ctx["aws_request_id"] != got["event"]["requestContext"]["requestId"]


# ------------------------------------------------------------------------ responses


def test_response_headers_multi_value_and_request_id(server):
    status, headers, body = request(server, "GET", "/echo")
    assert status == 200
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    event = json.loads(body)["event"]
    assert headers["x-request-id"] == event["requestContext"]["requestId"]
    assert headers["x-amzn-RequestId"] == event["requestContext"]["requestId"]
    assert headers["Content-Type"] == "application/json"


def test_base64_response_is_decoded(server):
    status, headers, body = request(server, "GET", "/binary")
    assert status == 200
    assert body == bytes(range(256))
    assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v1/embeddings"), ("DELETE", "/echo"), ("GET", "/items"), ("GET", "/items/a/b")],
)
def test_unknown_route_is_404_in_openai_shape(server, method, path):
    status, headers, body = request(server, method, path)
    assert status == 404
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unknown_route"
    assert error["param"] is None
    assert isinstance(error["message"], str) and error["message"]
    assert headers["x-request-id"]
    assert headers["Content-Type"] == "application/json"


def test_body_over_10_mib_is_413(server):
    status, headers, body = request(server, "POST", "/echo", body=b"x" * (10 * 1024 * 1024 + 1))
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"


def test_body_of_exactly_10_mib_passes(server):
    status, _, body = request(server, "POST", "/echo?summary=1", body=b"x" * (10 * 1024 * 1024))
    assert status == 200
    assert json.loads(body)["event"]["body_length"] == 10 * 1024 * 1024


def test_a_result_over_lambdas_6_mb_is_a_502(server):
    # the same body echoed back whole: the handler's result is over Lambda's 6 MB response limit
    status, _, body = request(server, "POST", "/echo", body=b"x" * (7 * 1024 * 1024))
    assert status == 502 and json.loads(body)["error"]["type"] == "server_error"


def test_413_before_reading_a_declared_huge_body(server):
    # GIVEN a client that declares 50 MiB and sends nothing yet
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n")
        # THEN the answer comes at once, without waiting for the body
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413")


def test_handler_exception_is_502(server):
    status, headers, body = request(server, "POST", "/boom", body=b"{}")
    assert status == 502
    assert json.loads(body)["error"]["message"] == "Internal server error"
    assert headers["x-request-id"]


def test_malformed_proxy_response_is_502(server):
    status, _, body = request(server, "GET", "/bad")
    assert status == 502
    assert json.loads(body)["error"]["message"] == "Internal server error"


def test_a_dead_worker_is_replaced(server):
    status, _, body = request(server, "GET", "/crash")
    assert status == 502
    assert json.loads(body)["error"]["message"] == "Internal server error"
    assert echo(server, "GET", "/echo")["event"]["resource"] == "/echo"


def test_a_copy_killed_mid_request_is_503_with_retry_after():
    # GIVEN a copy busy with a slow request
    app = build_app(FIXTURE, max_copies=2)
    srv = serve(app, "127.0.0.1", 0, block=False)
    try:
        pool = app.pools["EchoFunction"]
        assert pool.warm(1) == 1
        [victim] = pool.pids()
        answer: list[tuple[int, http.client.HTTPMessage, bytes]] = []
        caller = threading.Thread(target=lambda: answer.append(request(srv, "GET", "/slow?s=5")))
        caller.start()
        time.sleep(0.5)
        # WHEN its process is killed (kill -9, as a host failure or the OOM killer would)
        os.kill(victim, signal.SIGKILL)
        caller.join(10)
        # THEN the caller learns it may retry: 503 + Retry-After, in OpenAI's error shape
        [(status, headers, body)] = answer
        assert status == 503 and headers["Retry-After"] == "1" and headers["x-request-id"]
        assert json.loads(body)["error"]["type"] == "server_error"
        # AND the next request gets a new copy
        assert echo(srv, "GET", "/echo")["event"]["resource"] == "/echo"
    finally:
        srv.shutdown()
        srv.server_close()
        app.close()


def test_module_isolation_serves_too():
    # isolation="module": copies share the process (only for handlers without process-wide state)
    app = build_app(FIXTURE, max_copies=2, isolation="module")
    srv = serve(app, "127.0.0.1", 0, block=False)
    try:
        assert echo(srv, "GET", "/items/x")["event"]["pathParameters"] == {"item_id": "x"}
        status, _, _ = request(srv, "POST", "/boom", body=b"{}")
        assert status == 502
    finally:
        srv.shutdown()
        srv.server_close()
        app.close()


def test_server_keeps_serving_after_errors(server):
    request(server, "POST", "/boom", body=b"{}")
    assert echo(server, "GET", "/echo")["event"]["resource"] == "/echo"


# ------------------------------------------------------------------------ concurrency


def test_two_slow_requests_run_in_parallel_on_two_copies(server):
    server.app.pools["EchoFunction"].warm(2)  # no cold start (seconds on a loaded machine) inside the overlap
    results: list[dict[str, Any]] = []

    def call() -> None:
        results.append(echo(server, "GET", "/slow?s=0.6"))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = results
    # THEN both ran at the same time ...
    assert a["started"] < b["finished"] and b["started"] < a["finished"]
    # ... on two different copies of the module, each serving one request at a time
    assert a["copy"] != b["copy"]
    for r in results:
        assert r["concurrent_in_copy"] == 1
        assert r["request_id"] == r["own_request_id"]  # module state not clobbered
        assert r["process_wide_request_id"] == r["own_request_id"]  # nor process-wide state


def test_pool_never_exceeds_max_copies_and_reuses_copies():
    app = build_app(FIXTURE, max_copies=2)
    srv = serve(app, "127.0.0.1", 0, block=False)
    try:
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def call() -> None:
            r = echo(srv, "GET", "/slow?s=0.2")
            with lock:
                results.append(r)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6
        assert len({r["copy"] for r in results}) == 2
        assert app.pools["EchoFunction"].size == 2
        assert all(r["concurrent_in_copy"] == 1 and r["request_id"] == r["own_request_id"] for r in results)
    finally:
        srv.shutdown()
        srv.server_close()
        app.close()


def test_service_facade_starts_on_a_free_port_and_stops():
    emulator = ApiGatewayEmulator(port=0, workers=2, env={"FIXTURE_FROM_ENV": "1"}, template=FIXTURE).start()
    try:
        assert emulator.port != 0
        host, port = emulator.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/echo")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        emulator.stop()


def test_only_api_events_become_routes():
    routes = read_routes(load_template(FIXTURE))
    assert {r.function_id for r in routes} == {"EchoFunction"}
    assert ("ANY", "/files/{path+}") in {(r.method, r.resource) for r in routes}


# ------------------------------------------------------------------------ the HTTP layer's own errors
# Raw sockets: what a broken client (or an attacker) sends, byte for byte.

MARKER = "zq7marker"  # put into requests; must never come back in an error


def raw_exchange(server, data: bytes, *, shut_write: bool = False, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes, read until the server closes; the status, headers and body of the answer."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received, "the connection closed without an answer"
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_own_error(answer: tuple[int, dict, bytes], status: int, code: str | None) -> dict:
    got, headers, body = answer
    assert got == status, body
    assert int(headers["content-length"]) == len(body)  # exactly the body, nothing after it
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert MARKER not in body.decode() and "<" not in body.decode()  # no echo, no HTML
    return error


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (f"{MARKER}\r\n\r\n", 400, "bad_request"),  # one word
    (f"GET /echo HTTP/1.1 {MARKER}\r\n\r\n", 400, "bad_request"),  # four words
    (f"GET /echo {MARKER}/1.1\r\n\r\n", 400, "bad_request"),  # not HTTP
    (f"GET /echo HTTP/1.{MARKER}\r\n\r\n", 400, "bad_request"),
    (f"GET /echo?{MARKER}\r\n\r\n", 400, "bad_request"),  # HTTP/0.9
    (f"POST /echo?{MARKER}\r\n\r\n", 400, "bad_request"),
    (f"GET /echo?{MARKER} HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
    (f"{MARKER.upper()} /echo HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),  # unknown method
    ("TRACE /echo HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),
])
def test_malformed_request_lines_get_json_errors(server, request_bytes, status, code):
    assert_own_error(raw_exchange(server, request_bytes.encode()), status, code)


def test_request_line_over_64_kib_is_414(server):
    answer = raw_exchange(server, f"GET /echo?{MARKER}={'x' * 70_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert_own_error(answer, 414, "uri_too_long")


def test_header_line_over_64_kib_is_431(server):
    answer = raw_exchange(server, f"GET /echo HTTP/1.1\r\nHost: x\r\nX-{MARKER}: {'y' * 70_000}\r\n\r\n".encode())
    assert_own_error(answer, 431, "headers_too_large")


def test_more_than_100_headers_is_431(server):
    many = "".join(f"X-{MARKER}-{i}: v\r\n" for i in range(120))
    assert_own_error(raw_exchange(server, f"GET /echo HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode()), 431,
                     "headers_too_large")


@pytest.mark.parametrize("chunks", [
    f"{MARKER}\r\nabc\r\n0\r\n\r\n",  # not hex
    "-3\r\nabc\r\n0\r\n\r\n",  # a sign: int(..., 16) would take it
    "0x3\r\nabc\r\n0\r\n\r\n",
    " \r\nabc\r\n0\r\n\r\n",  # empty
    "3\r\nabcdef\r\n0\r\n\r\n",  # more data than the size says
    "ffffffffffffffffff\r\n",  # 18 hex digits
])
def test_bad_chunk_size_is_400_not_a_dropped_connection(server, chunks):
    request_bytes = f"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}".encode()
    assert_own_error(raw_exchange(server, request_bytes), 400, "bad_request")


def test_chunked_body_with_extensions_and_trailers_passes(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["event"]["body"] == "hello world"


def test_chunked_body_over_10_mib_is_413(server):
    chunk = b"x" * (1 << 20)
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(11):
                sock.sendall(b"100000\r\n" + chunk + b"\r\n")
        except ConnectionError:
            pass  # the server answered and closed before the last chunk
        received = b""
        while data := sock.recv(65536):
            received += data
    assert received.startswith(b"HTTP/1.1 413")
    head, _, body = received.partition(b"\r\n\r\n")
    assert json.loads(body)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("framing", [
    f"Content-Length: {MARKER}",
    "Content-Length: -1",
    "Content-Length: +3",
    "Content-Length: 3\r\nContent-Length: 4",  # two different lengths
    "Content-Length: 3, 4",
    "Content-Length: 3\r\nTransfer-Encoding: chunked",  # both framings: request smuggling
])
def test_bad_content_length_is_400(server, framing):
    request_bytes = f"POST /echo HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\nabc".encode()
    assert_own_error(raw_exchange(server, request_bytes), 400, "bad_request")


def test_unknown_transfer_coding_is_501(server):
    request_bytes = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert_own_error(raw_exchange(server, request_bytes), 501, "not_implemented")


def test_body_shorter_than_its_content_length_is_400(server):
    answer = raw_exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", shut_write=True)
    assert_own_error(answer, 400, "bad_request")


def test_expect_100_with_a_bad_length_is_refused_before_the_body(server):
    request_bytes = b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999999\r\n\r\n"
    assert_own_error(raw_exchange(server, request_bytes), 413, "request_too_large")


def test_404_and_413_echo_nothing_and_carry_a_correct_length(server):
    assert_own_error(raw_exchange(server, f"GET /{MARKER}?q={MARKER} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                  .encode()), 404, "unknown_route")
    assert_own_error(raw_exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
                     413, "request_too_large")


def test_head_of_an_error_has_the_length_of_the_body_it_leaves_out(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"HEAD /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and body == b""
    assert int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]) > 0


def test_a_body_that_stops_arriving_is_408():
    app = build_app(FIXTURE, max_copies=1)
    srv = serve(app, "127.0.0.1", 0, block=False, idle_timeout_s=0.5)
    try:
        answer = raw_exchange(srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert_own_error(answer, 408, "request_timeout")
    finally:
        srv.shutdown()
        srv.server_close()
        app.close()


def test_keep_alive_survives_a_good_request_and_an_error_closes_only_its_own_connection(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for _ in range(2):  # one connection, two requests
            conn.request("GET", "/echo")
            response = conn.getresponse()
            assert response.status == 200 and not response.will_close
            response.read()
    finally:
        conn.close()
    raw_exchange(server, b"BREW /echo HTTP/1.1\r\n\r\n")
    assert echo(server, "GET", "/echo")["event"]["resource"] == "/echo"


def test_a_copy_killed_while_idle_is_never_handed_out():
    # GIVEN a warm copy whose process is killed between requests (kill -9, OOM)
    app = build_app(FIXTURE, max_copies=2)
    srv = serve(app, "127.0.0.1", 0, block=False)
    try:
        pool = app.pools["EchoFunction"]
        assert pool.warm(1) == 1
        [victim] = pool.pids()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while victim in pool.pids():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # WHEN the next request comes, THEN a live copy answers it, not the dead one (no 502)
        assert echo(srv, "GET", "/echo")["event"]["resource"] == "/echo"
        assert pool.take_lost() == [-signal.SIGKILL]  # reported once, for the stack's supervisor
        assert pool.take_lost() == []
        assert pool.size == 1 and victim not in pool.pids()
    finally:
        srv.shutdown()
        srv.server_close()
        app.close()


def test_a_closed_pool_starts_no_copy():
    app = build_app(FIXTURE, max_copies=2)
    pool = app.pools["EchoFunction"]
    app.close()
    assert pool.warm(2) == 0 and pool.pids() == [] and pool.closed
