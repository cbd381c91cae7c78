"""Security of the running local stack through HTTP: tenant isolation, revocation, expiry and
suspension under concurrent load, hostile input on every route, and no secret in any log or
error body. Runs after the other e2e modules (alphabetical), so its log check covers them."""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from gateway import openapi
from gateway.domain.keys import PREFIX, _checksum, parse_key
from gateway.domain.plans import MAX_BATCH_FILE_BYTES
from tests.e2e.conftest import Api

MODEL = "all-MiniLM-L6-v2"
ERROR_FIELDS = {"message", "type", "param", "code"}
# Every plaintext key this module sees; the log check looks for each and for its secret part.
ISSUED: list[str] = []
KEY_PATTERN = re.compile(r"maas_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}")


class _Records(logging.Handler):
    """Every log record of this (pytest) process, from import (collection) on: the emulator,
    the flusher loop and anything else the stack runs in-process."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot format is not ours to fail on
            self.lines.append(str(record.msg))


IN_PROCESS_LOGS = _Records()
logging.getLogger().addHandler(IN_PROCESS_LOGS)


# ----------------------------------------------------------------------------------- helpers


def issue(admin: Api, tenant_id: str, **body) -> dict:
    response = admin.post(f"/billing/tenants/{tenant_id}/keys", json=body)
    assert response.status_code == 201, response.text
    ISSUED.append(response.json()["key"])
    return response.json()


def tenant_with_key(admin: Api, plan: str = "pro", limits: dict | None = None, **key) -> tuple[dict, dict]:
    tenant = admin.post("/billing/tenants", json={"name": f"sec-{plan}", "plan": plan}).json()
    if limits:
        assert admin.patch(f"/billing/tenants/{tenant['id']}", json={"limits": limits}).status_code == 200
    return tenant, issue(admin, tenant["id"], **key)


def assert_clean_error(status: int, body: bytes | str, *, allowed: tuple[int, ...] = ()) -> dict | None:
    """Never a 5xx; every error in OpenAI's shape; no issued key in any body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    assert status < 500, (status, text[:300])
    for key in ISSUED:
        assert key not in text and key[-38:-6] not in text
    if status < 400:
        assert not allowed or status in allowed, (status, text[:300])
        return None
    document = json.loads(text)
    assert set(document) == {"error"} and set(document["error"]) == ERROR_FIELDS, text[:300]
    assert isinstance(document["error"]["message"], str)
    assert "Traceback" not in text and 'File "' not in text
    return document["error"]


def raw(stack, method: str, path: str, headers: list[tuple[str, str | bytes]], body: bytes = b"") -> tuple[int, bytes]:
    """One request with exactly these headers (repeats allowed), bytes as given."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.config.api_port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body or method in ("POST", "PATCH", "PUT"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def forge(key_id: str, secret: str) -> str:
    """A well-formed key (valid checksum) for a given key id and secret."""
    body = f"{PREFIX}{key_id.removeprefix('key_')}_{secret}"
    return body + _checksum(body)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------- isolation


def test_tenant_a_can_neither_read_change_nor_infer_anything_of_tenant_b(stack, admin):
    tenant_a, key_a = tenant_with_key(admin, plan="starter")
    tenant_b, key_b = tenant_with_key(admin, plan="pro", limits={"requests_per_minute": 123})
    api_a = Api(stack.api_url, key_a["key"])
    api_b = Api(stack.api_url, key_b["key"])

    # GIVEN usage on both tenants
    a_response = api_a.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert a_response.status_code == 200
    assert a_response.headers["RateLimit-Policy"].startswith('"requests";q=600;')  # A's limits, not B's
    for _ in range(2):
        assert api_b.post("/v1/embeddings", json={"model": MODEL, "input": "b b b"}).status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = admin.get("/billing/usage", params={"start": today(), "end": today(),
                                                   "tenant_id": tenant_b["id"]}).json()["data"]
        if sum(r["requests"] for r in rows) == 2:
            break
        time.sleep(0.2)

    # WHEN A reads its usage (even naming B) THEN only A's own rows come back
    for params in ({}, {"tenant_id": tenant_b["id"]}, {"tenant_id": tenant_b["id"], "group_by": "tenant"}):
        usage = api_a.get("/v1/usage", params={"start": today(), "end": today(), **params})
        assert usage.status_code == 200, usage.text
        rows = usage.json()["data"]
        assert {r["tenant_id"] for r in rows} <= {tenant_a["id"], None}
        assert sum(r["requests"] for r in rows) <= 1
        assert tenant_b["id"] not in usage.text

    # AND every admin or finance route answers A the same for B's real ids as for ids that
    # do not exist: 403, with the same body, before anything is looked up
    def probes(tenant_id: str, key_id: str) -> list[tuple[str, str, dict]]:
        return [
            ("get", f"/billing/tenants/{tenant_id}", {}),
            ("patch", f"/billing/tenants/{tenant_id}", {"json": {"status": "suspended"}}),
            ("get", f"/billing/tenants/{tenant_id}/keys", {}),
            ("post", f"/billing/tenants/{tenant_id}/keys", {"json": {"scopes": ["admin"]}}),
            ("delete", f"/billing/keys/{key_id}", {}),
            ("post", f"/billing/keys/{key_id}/rotate", {"json": {}}),
            ("get", "/billing/usage", {"params": {"start": today(), "end": today(), "tenant_id": tenant_id}}),
            ("get", "/billing/usage/events", {"params": {"start": today(), "end": today(), "tenant_id": tenant_id}}),
            ("get", "/billing/invoices", {"params": {"month": today()[:7]}}),
            ("get", "/billing/tenants", {}),
            ("get", "/billing/audit", {}),
            ("get", "/billing/plans", {}),
        ]

    real = probes(tenant_b["id"], key_b["id"])
    ghost = probes("ten_ffffffffffffffff", "key_ZZZZZZZZZZZZZZZZ")
    for (method, path, kwargs), (_, ghost_path, ghost_kwargs) in zip(real, ghost, strict=True):
        seen = getattr(api_a, method)(path, **kwargs)
        unseen = getattr(api_a, method)(ghost_path, **ghost_kwargs)
        assert seen.status_code == unseen.status_code == 403, (path, seen.text)
        assert seen.json() == unseen.json(), path
        assert tenant_b["id"] not in seen.text and tenant_b["name"] not in seen.text

    # AND B is untouched: its key works, its record and keys are as they were
    assert api_b.post("/v1/embeddings", json={"model": MODEL, "input": "b"}).status_code == 200
    assert admin.get(f"/billing/tenants/{tenant_b['id']}").json()["status"] == "active"
    assert [k["status"] for k in admin.get(f"/billing/tenants/{tenant_b['id']}/keys").json()["data"]] == ["active"]

    # AND a key forged on B's key id (A's secret, valid checksum) is refused exactly like one
    # on an id that never existed: nothing tells A that B's key id is real
    secret_a = key_a["key"][-38:-6]
    on_b = Api(stack.api_url, forge(key_b["id"], secret_a)).post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    on_none = Api(stack.api_url, forge("key_0000000000000000", secret_a)).post(
        "/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert on_b.status_code == on_none.status_code == 401 and on_b.json() == on_none.json()


# --------------------------------------------------- revocation, expiry, suspension under load


def hammer(stack, key: str, stop: threading.Event, threads: int = 6) -> Iterator[list[tuple[float, int, str]]]:
    """Threads sending requests with ``key`` until ``stop``: (wall-clock start, status, route)."""
    results: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while not stop.is_set():
            started = time.time()
            if index % 3 == 2:  # a fresh-read route next to the hot path
                response = session.get(f"{stack.api_url}/v1/usage", params={"start": today(), "end": today()},
                                       timeout=30)
                route = "usage"
            else:
                response = session.post(f"{stack.api_url}/v1/embeddings", json={"model": MODEL, "input": "a"},
                                        timeout=30)
                route = "embeddings"
            assert_clean_error(response.status_code, response.content)
            with lock:
                results.append((started, response.status_code, route))

    pool = ThreadPoolExecutor(threads)
    futures = [pool.submit(worker, i) for i in range(threads)]
    yield results
    stop.set()
    for future in futures:
        future.result(timeout=60)
    pool.shutdown()


def run_under_load(stack, key: str, action) -> tuple[list[tuple[float, int, str]], float]:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    generator = hammer(stack, key, stop)
    results = next(generator)
    time.sleep(1.0)
    effective = action()  # the wall-clock moment after which nothing may succeed
    time.sleep(1.0)
    stop.set()
    next(generator, None)
    return results, effective


def assert_cut_at(results: list[tuple[float, int, str]], effective: float, refused: int) -> None:
    before = [status for started, status, _ in results if started < effective - 0.5]
    after = [(status, route) for started, status, route in results if started > effective]
    assert before.count(200) >= 3, before  # the key did work under load before
    assert len(after) >= 10, after  # and the load went on after
    assert [s for s, _ in after if s == 200] == [], "a request started after the change succeeded"
    assert {s for s, _ in after} == {refused}, after


def test_revocation_bites_on_the_very_next_request_under_load(stack, admin):
    _, key = tenant_with_key(admin)

    def revoke() -> float:
        response = admin.delete(f"/billing/keys/{key['id']}")
        assert response.status_code == 204
        return time.time()

    assert_cut_at(*run_under_load(stack, key["key"], revoke), refused=401)


def test_suspension_bites_on_the_very_next_request_under_load(stack, admin):
    tenant, key = tenant_with_key(admin)

    def suspend() -> float:
        response = admin.patch(f"/billing/tenants/{tenant['id']}", json={"status": "suspended"})
        assert response.status_code == 200
        return time.time()

    assert_cut_at(*run_under_load(stack, key["key"], suspend), refused=403)


def test_expiry_bites_at_the_instant_under_load(stack, admin):
    expires = datetime.now(UTC) + timedelta(seconds=3)
    tenant = admin.post("/billing/tenants", json={"name": "sec-expiry", "plan": "pro"}).json()
    key = issue(admin, tenant["id"], expires_at=expires.isoformat(timespec="milliseconds"))

    def wait_for_expiry() -> float:
        time.sleep(max(0.0, expires.timestamp() - time.time()))
        return expires.timestamp()

    assert_cut_at(*run_under_load(stack, key["key"], wait_for_expiry), refused=401)


def test_rotation_grace_ends_on_time_under_load(stack, admin):
    _, key = tenant_with_key(admin)

    def rotate() -> float:
        response = admin.post(f"/billing/keys/{key['id']}/rotate", json={"grace_seconds": 0})
        assert response.status_code == 201
        ISSUED.append(response.json()["key"])
        return time.time()

    assert_cut_at(*run_under_load(stack, key["key"], rotate), refused=401)


def test_revoked_key_is_refused_by_v1_models_at_once(stack, admin):
    _, key = tenant_with_key(admin)
    api = Api(stack.api_url, key["key"])
    assert api.get("/v1/models").status_code == 200  # the invoke function caches the key record now
    assert admin.delete(f"/billing/keys/{key['id']}").status_code == 204
    assert all(api.get("/v1/models").status_code == 401 for _ in range(8))


# ------------------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def targets(stack, admin) -> dict:
    """Real ids and keys to aim every route at."""
    tenant, inference = tenant_with_key(admin)
    spare = issue(admin, tenant["id"], name="spare")
    return {"tenant_id": tenant["id"], "key_id": spare["id"], "tenant": inference["key"], "admin": stack.admin_key}


def operations(targets: dict) -> list[tuple[str, str, str]]:
    """(METHOD, concrete path, key) for every operation of the OpenAPI document."""
    out = []
    for method, template in sorted(openapi.operations()):
        path = template.replace("{tenant_id}", targets["tenant_id"]).replace("{key_id}", targets["key_id"])
        key = targets["admin"] if template.startswith("/billing") else targets["tenant"]
        out.append((method, path, key))
    return out


DEEP = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BAD_BODIES = {
    "malformed": b'{"name": "x", ',
    "not an object": b'["name", "plan"]',
    "null": b"null",
    "string": b'"hello"',
    "wrong types": b'{"name": 1, "plan": [], "status": 7, "limits": "x", "scopes": "admin", "grace_seconds": "1",'
                   b' "model": 5, "input": {"a": 1}, "expires_at": 12}',
    "unknown fields": b'{"zzz": 1, "__proto__": {"admin": true}}',
    "deeply nested": DEEP,
    "non-utf-8": b'{"name": "\xff\xfe\xc3\x28", "plan": "starter"}',
    "lone surrogate": b'{"name": "\\ud800", "plan": "starter"}',
    "lone surrogate input": b'{"model": "all-MiniLM-L6-v2", "input": ["ok", "\\ud800"]}',
    "token ids out of range": b'{"model": "all-MiniLM-L6-v2", "input": [[-1, 99999999999, 3]]}',
    "huge numbers": b'{"grace_seconds": 1e400, "limits": {"monthly_tokens": 1e999}, "input": [1e308]}',
    "empty": b"",
}


def test_hostile_bodies_on_every_route_are_clean_4xx(stack, targets):
    for method, path, key in operations(targets):
        if method == "DELETE":
            continue  # a DELETE takes no body; revoking the spare key here would only end the test early
        for name, body in BAD_BODIES.items():
            headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
            status, answer = raw(stack, method, path, headers, body)
            # an empty body is a valid "all defaults" for creating or rotating a key or a no-op PATCH
            if method in ("POST", "PATCH") and not (name == "empty" and (method == "PATCH" or path.endswith(
                    ("/keys", "/rotate")))):
                assert 400 <= status < 500, (method, path, name, status, answer[:200])
            assert_clean_error(status, answer)


def test_oversized_bodies_are_413(stack, targets):
    over_handler = b'{"name": "' + b"x" * (2 * 1024 * 1024 + 10) + b'", "plan": "starter"}'
    over_gateway = b"x" * (10 * 1024 * 1024 + 1)
    # An upload to the Batch API may be larger (5 MiB and its multipart framing, under the
    # gateway's 10 MiB): over that it is a 413 too.
    over_upload = b"x" * (MAX_BATCH_FILE_BYTES + 64 * 1024 + 1)
    bodiless = {(m, p) for p, item in openapi.document()["paths"].items() for m, op in item.items()
                if m in ("post", "patch") and "requestBody" not in op}  # a cancel reads no body
    for method, path, key in operations(targets):
        if method not in ("POST", "PATCH") or (method.lower(), path) in bodiless:
            continue
        headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
        status, answer = raw(stack, method, path, headers, over_upload if path == "/v1/files" else over_handler)
        assert status == 413, (path, answer[:200])
        assert_clean_error(status, answer)
    status, answer = raw(stack, "POST", "/billing/tenants", [("Authorization", f"Bearer {targets['admin']}")],
                         over_gateway)
    assert status == 413
    assert_clean_error(status, answer)


ABSURD_QUERIES = [
    "limit=-1", "limit=0", "limit=101", "limit=99999999999999999999999", "limit=abc", "limit=1.5", "limit=%00",
    "limit=1&limit=2", "cursor=" + "A" * 5000, "cursor=%00%ff", "cursor=eyJwayI6IlRFTkFOVFMifQ",
    "cursor=" + "eyJnc2kxcGsiOiJURU5BTlRTIiwiZ3NpMXNrIjp7fX0", "start=9999-99-99&end=0000-00-00",
    "start=2026-01-01&end=2020-01-01", "start=&end=", "start=2026-01-01&end=" + "9" * 5000,
    "group_by=" + "x," * 3000, "group_by=tenant,tenant,day", "format=xml", "format=csv&format=json",
    "tenant_id=%00", "tenant_id=" + "%F0%9F%99%82" * 500, "tenant_id=ten_ffffffffffffffff", "month=2026-13",
    "month=" + "1" * 4000, "month=%ff%fe", "a=" + "b" * 8000, "%ff=%fe", "&&&==&",
]


def test_absurd_query_parameters_are_never_5xx(stack, targets):
    for method, path, key in operations(targets):
        if method not in ("GET",):
            continue
        for query in ABSURD_QUERIES:
            status, answer = raw(stack, method, f"{path}?{query}", [("Authorization", f"Bearer {key}")])
            assert_clean_error(status, answer)


def test_absurd_path_parameters_are_404(stack, targets):
    admin = [("Authorization", f"Bearer {targets['admin']}")]
    for value in ("%00", "%ff%fe", "ten_" + "a" * 5000, "..%2F..%2Fbilling", "ten_%F0%9F%99%82", "null"):
        for method, path in (("GET", f"/billing/tenants/{value}"), ("PATCH", f"/billing/tenants/{value}"),
                             ("GET", f"/billing/tenants/{value}/keys"), ("DELETE", f"/billing/keys/{value}"),
                             ("POST", f"/billing/keys/{value}/rotate")):
            body = b"{}" if method in ("POST", "PATCH") else b""
            status, answer = raw(stack, method, path, [*admin, ("Content-Type", "application/json")], body)
            assert status == 404, (method, path[:80], status, answer[:200])
            assert_clean_error(status, answer)
    # An encoded slash may route elsewhere (the resolver matches the decoded path), never to a 5xx.
    for method, path in (("GET", "/billing/tenants/%2F"), ("DELETE", "/billing/keys/%2F"),
                         ("GET", "/billing/tenants/%2F/keys")):
        assert_clean_error(*raw(stack, method, path, admin))


def test_header_tricks_are_401(stack, targets):
    tenant, other = targets["tenant"], targets["admin"]
    cases = {
        "two Authorization keys": [("Authorization", f"Bearer {tenant}"), ("Authorization", f"Bearer {other}")],
        "Authorization and x-api-key disagree": [("Authorization", f"Bearer {tenant}"), ("x-api-key", other)],
        "two x-api-key keys": [("x-api-key", tenant), ("X-Api-Key", other)],
        "Basic scheme": [("Authorization", f"Basic {tenant}")],
        "empty Bearer": [("Authorization", "Bearer ")],
        "Bearer twice": [("Authorization", f"Bearer Bearer {tenant}")],
        "key with a NUL": [("x-api-key", tenant[:10] + "%00" + tenant[10:])],
        "latin-1 bytes": [("x-api-key", b"maas_\xff\xfe")],
        "very long key": [("Authorization", "Bearer maas_" + "A" * 7000)],
        "typo in the key": [("Authorization", f"Bearer {tenant[:-1]}{'A' if tenant[-1] != 'A' else 'B'}")],
    }
    for method, path, _ in operations(targets):
        if path == "/health":
            continue
        for name, headers in cases.items():
            body = b"{}" if method in ("POST", "PATCH") else b""
            status, answer = raw(stack, method, path, [*headers, ("Content-Type", "application/json")], body)
            assert status == 401, (method, path, name, status, answer[:200])
            assert_clean_error(status, answer)
    # the same key twice, in both headers, is one key: accepted
    status, answer = raw(stack, "GET", "/v1/models", [("Authorization", f"Bearer {tenant}"), ("x-api-key", tenant)])
    assert status == 200, answer[:200]


# ------------------------------------------------------------------------------------ secrets


def test_no_issued_key_or_its_secret_appears_in_any_log(stack, admin):
    # GIVEN every log the stack wrote this session (handler logs of every function, the
    # inference server, Redis, DynamoDB) and every record of this process's loggers
    ISSUED.append(stack.admin_key)
    texts = {str(path): path.read_text(errors="replace") for path in Path(stack.logs).rglob("*") if path.is_file()}
    texts["in-process logging"] = "\n".join(IN_PROCESS_LOGS.lines)
    assert any("lambda" in name for name in texts), sorted(texts)  # the handlers' logs are there to check
    for name, text in texts.items():
        # THEN no well-formed key at all (the scanner-friendly format makes any leak findable) ...
        leaked = [candidate for candidate in KEY_PATTERN.findall(text) if parse_key(candidate)]
        assert not leaked, f"{name}: {len(leaked)} key(s) in the log"
        # ... and no secret part of any key this module issued, alone or inside something else
        for key in ISSUED:
            assert key[-38:-6] not in text and key not in text, name
