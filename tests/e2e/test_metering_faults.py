"""Metering on the running local stack when Redis dies mid-request: requests admitted
before the crash settle after it (their usage goes straight to DynamoDB), requests while
Redis is down are refused (503, fail closed) and not charged, and after Redis returns and
a final flush the ledger holds exactly the 200 responses: same request ids, same token
sum as their usage.prompt_tokens, rollups = ledger (and reconcile agrees)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

from gateway.adapters.redis_store import tenant_key
from tests.e2e.conftest import Api

MODEL = "all-MiniLM-L6-v2"
IN_FLIGHT = 4


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    day = timedelta(days=1)
    return {"start": (now - day).strftime("%Y-%m-%d"), "end": (now + day).strftime("%Y-%m-%d")}


class Books:
    """Every response the tenant got: the 200s with what they said they cost, the rest."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.ok: dict[str, int] = {}
        self.failed: list[tuple[int, str | None]] = []

    def call(self, text: str, **extra) -> int:
        response = self.api.post("/v1/embeddings", json={"model": MODEL, "input": text, **extra})
        if response.status_code == 200:
            self.ok[response.headers["x-request-id"]] = response.json()["usage"]["prompt_tokens"]
        else:
            self.failed.append((response.status_code, response.headers.get("x-request-id")))
        return response.status_code

    def answered(self, text: str, deadline_s: float = 60) -> int:
        """``call`` again while the answer is a 503 (Retry-After: a loaded machine's Redis
        call can time out, and the gateway then fails closed), until the deadline."""
        deadline = time.monotonic() + deadline_s
        while (status := self.call(text)) == 503 and time.monotonic() < deadline:
            time.sleep(1)
        return status


def ledger(admin: Api, tenant_id: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        params = {"tenant_id": tenant_id, **window(), **({"cursor": cursor} if cursor else {})}
        body = admin.get("/billing/usage/events", params=params).json()
        rows += body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return rows


def test_redis_killed_during_settle_loses_nothing_and_charges_no_failure(stack, admin, tenant):
    books = Books(Api(stack.api_url, tenant["key"]))
    for text in ("before the crash", "a"):
        assert books.answered(text) == 200
    assert books.call("x " * 400) == 400  # too long, not truncated: refused, never charged

    # GIVEN requests admitted by Redis whose inference is held (the inference server paused)
    probe = stack.redis_client()
    inference = os.getpgid(stack.inference.process.pid)
    os.killpg(inference, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            pending = [pool.submit(books.call, f"in flight number {i}") for i in range(IN_FLIGHT)]
            deadline = time.monotonic() + 60
            while probe.zcard(tenant_key(tenant["id"], "inflight")) < IN_FLIGHT:
                assert time.monotonic() < deadline, "the requests were not admitted"
                time.sleep(0.05)
            # WHEN Redis dies (saved first, though the stack's Redis is durable as MemoryDB is)
            probe.save()
            stack.redis.kill()
            os.killpg(inference, signal.SIGCONT)
            statuses = [f.result(timeout=120) for f in pending]
    finally:
        os.killpg(inference, signal.SIGCONT)
    # THEN they are answered and charged, straight into DynamoDB
    assert statuses == [200] * IN_FLIGHT
    # AND while Redis is down nothing is admitted (quota fails closed) nor charged
    assert books.call("while redis is down") == 503

    stack.redis.start()
    deadline = time.monotonic() + 60
    while books.call("after the restart") != 200:
        assert time.monotonic() < deadline, "no recovery after Redis returned"
        time.sleep(0.2)

    # after recovery and a final flush: ledger = the 200 responses, exactly
    stack.container.flusher.flush([tenant["id"]])
    deadline = time.monotonic() + 60
    while True:
        rows = ledger(admin, tenant["id"])
        if len(rows) >= len(books.ok) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(r["request_id"] for r in rows) == sorted(books.ok)
    assert sum(r["prompt_tokens"] for r in rows) == sum(books.ok.values())
    assert not {rid for _, rid in books.failed} & {r["request_id"] for r in rows}
    usage = admin.get("/billing/usage", params={"tenant_id": tenant["id"], **window(), "group_by": "tenant"})
    [row] = usage.json()["data"]
    assert (row["requests"], row["prompt_tokens"]) == (len(books.ok), sum(books.ok.values()))
    today = datetime.now(UTC).date()
    result = stack.container.reconciler.run(date(today.year, today.month, 1), today + timedelta(days=1),
                                               tenant_ids=[tenant["id"]])
    assert result.drift == [] and result.unstable == []
