"""Fault injection on the metering path, with real processes: the flusher runs as its own
process and is SIGKILLed between read and commit, halfway through a commit, and between
commit and acknowledge (the MAAS_FLUSHER_CRASH_AT test hook), or at a random moment from
outside; DynamoDB fails at the HTTP level (a forwarding proxy in front of the local DynamoDB
answering 500, throttling, or committing and then losing the reply), for the flusher and
for a request whose settle finds Redis dead (its usage goes straight to DynamoDB). After
recovery and a final flush: every event is in the ledger exactly once, the rollups equal
the ledger, and a request whose usage could not be recorded was refused, not charged."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.adapters.active_tenants import ActiveTenants
from gateway.adapters.redis_store import STREAM_GROUP, usage_stream
from gateway.domain.usage import UsageEvent
from gateway.models.records import TenantRecord, rfc3339, utcnow
from gateway.services.metering import Flusher
from infra.local.services import ROOT

TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def seed(container, n: int, tenant_id: str | None = None) -> tuple[str, list[UsageEvent]]:
    tenant_id = tenant_id or f"ten_{uuid.uuid4().hex[:8]}"
    container.accounts.create_tenant(TenantRecord(id=tenant_id, name="f", plan="starter", created_at=rfc3339(utcnow())))
    container.seeder.seed(tenant_id)
    events = [UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tenant_id, key_id="k", model="all-MiniLM-L6-v2",
                         prompt_tokens=1 + i % 7, timestamp_ms=TS + i * 60_000) for i in range(n)]
    pipe = container.redis.pipeline(transaction=False)
    for e in events:
        pipe.xadd(usage_stream(tenant_id), e.to_fields())
    pipe.execute()
    ActiveTenants(container.redis).mark([tenant_id])  # listed, as the settle script does with each append
    return tenant_id, events


def assert_exactly_once(container, tenant_id: str, events: list[UsageEvent]) -> None:
    ledger = list(container.usage.ledger_all(tenant_id, "2000-01-01", "2100-01-01"))
    assert sorted(i["request_id"] for i in ledger) == sorted(e.request_id for e in events)
    assert sum(int(i["prompt_tokens"]) for i in ledger) == sum(e.prompt_tokens for e in events)
    rollups = container.usage.rollups(tenant_id, "2000-01-01", "2100-01-01")
    assert sum(int(r["requests"]) for r in rollups) == len(events)
    assert sum(int(r["prompt_tokens"]) for r in rollups) == sum(e.prompt_tokens for e in events)
    assert container.redis.xlen(usage_stream(tenant_id)) == 0
    assert container.redis.xpending(usage_stream(tenant_id), STREAM_GROUP)["pending"] == 0
    result = container.reconciler.run(date(2026, 1, 1), date(2026, 1, 31), tenant_ids=[tenant_id])
    assert result.drift == [] and result.unstable == []


def flusher_process(container, *, crash_at: str | None = None, loop: float | None = None) -> subprocess.Popen:
    # Exactly these settings: none of a MAAS_* variable another test left in this process.
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("MAAS_")}
    env = inherited | container.settings.model_copy(update={"flusher_claim_idle_ms": 0}).to_env()
    argv = [sys.executable, "-m", "tests.integration.crashing_flusher"]
    argv += (["--crash-at", crash_at] if crash_at else []) + (["--loop", str(loop)] if loop else [])
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize(("crash_at", "in_ledger_after_crash"), [
    ("after_read", 0), ("mid_commit", 49), ("after_commit", 99),
])
def test_flusher_killed_at_each_step_loses_nothing_and_counts_nothing_twice(container, crash_at,
                                                                            in_ledger_after_crash):
    # GIVEN 150 events waiting in a tenant's stream (two batches of at most 99)
    tenant_id, events = seed(container, 150)
    # WHEN a flusher process is SIGKILLed at that step of its first batch
    crashed = flusher_process(container, crash_at=crash_at)
    assert crashed.wait(60) == -signal.SIGKILL
    stream = usage_stream(tenant_id)
    assert sum(1 for _ in container.usage.ledger_all(tenant_id, "2000-01-01", "2100-01-01")) == in_ledger_after_crash
    assert container.redis.xpending(stream, STREAM_GROUP)["pending"] == 99  # read, never acknowledged
    # AND another flusher process runs
    survivor = flusher_process(container)
    out, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err.decode()
    # THEN the crashed one's entries were claimed back and everything is counted once
    assert json.loads(out.decode().splitlines()[-1])["written"] == 150 - in_ledger_after_crash
    assert_exactly_once(container, tenant_id, events)


def test_flusher_killed_from_outside_at_a_random_moment(container):
    tenant_id, events = seed(container, 400)
    looping = flusher_process(container, loop=0.05)
    time.sleep(random.uniform(1.2, 2.5))  # the interpreter starts in ~1 s, then it is mid-flush
    looping.send_signal(signal.SIGKILL)
    assert looping.wait(10) == -signal.SIGKILL
    survivor = flusher_process(container)
    assert survivor.wait(120) == 0
    assert_exactly_once(container, tenant_id, events)


# -- DynamoDB failing at the HTTP level ---------------------------------------------------
class FaultyDynamo:
    """A forwarding proxy in front of the local DynamoDB that can fail the next N
    TransactWriteItems calls: ``500`` (not forwarded), ``throttle`` (400
    ThrottlingException, not forwarded) or ``lost_reply`` (forwarded and committed, then
    answered 500, as when a response is lost)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode, self.remaining, self.seen = "", 0, 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target = self.headers.get("X-Amz-Target", "")
                fault = proxy._take() if target.endswith("TransactWriteItems") else ""
                if fault in ("500", "throttle"):
                    self._answer(500 if fault == "500" else 400, json.dumps({
                        "__type": "com.amazonaws.dynamodb.v20120810#"
                                  + ("InternalServerError" if fault == "500" else "ThrottlingException"),
                        "message": "injected fault"}).encode())
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request("POST", self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                if fault == "lost_reply":
                    self._answer(500, b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
                                      b'"message":"reply lost"}')
                    return
                self._answer(reply.status, data, reply.getheader("Content-Type"))

            def _answer(self, status: int, data: bytes, content_type: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, mode: str, calls: int) -> None:
        with self.lock:
            self.mode, self.remaining = mode, calls

    def _take(self) -> str:
        with self.lock:
            self.seen += 1
            if self.remaining <= 0:
                return ""
            self.remaining -= 1
            return self.mode


@pytest.fixture
def faulty(local_dynamodb, container):  # type: ignore[no-untyped-def]
    """The test's container, plus a second one whose DynamoDB is reached through the proxy."""
    from gateway.wiring import Container

    proxy = FaultyDynamo(local_dynamodb.port)
    through = Container(container.settings.model_copy(update={"dynamodb_endpoint": proxy.url}))
    yield proxy, through
    proxy.server.shutdown()


def test_dynamodb_errors_leave_the_batch_pending_and_it_is_retried(container, faulty):
    proxy, through = faulty
    tenant_id, events = seed(container, 150)
    stream = usage_stream(tenant_id)
    flusher = Flusher(redis_client=through.redis, usage=through.usage, accounts=through.accounts)
    # 500s outlast botocore's retries (1 + 3 attempts): nothing written, nothing acknowledged
    proxy.fail("500", 4)
    result = flusher.flush([tenant_id])
    assert result.errors and result.written == 0 and result.unflushed == 150
    assert container.redis.xpending(stream, STREAM_GROUP)["pending"] == 99
    assert not list(container.usage.ledger_all(tenant_id, "2000-01-01", "2100-01-01"))
    # throttling: the same, and the batch is retried (it is this flusher's own pending)
    proxy.fail("throttle", 4)
    result = flusher.flush([tenant_id])
    assert result.errors and result.written == 0
    assert container.redis.xpending(stream, STREAM_GROUP)["pending"] == 99
    # the first commit succeeds but its reply is lost: botocore retries, the retry finds
    # every ledger item present, so nothing is counted twice
    proxy.fail("lost_reply", 1)
    result = flusher.flush([tenant_id])
    # botocore retries the lost reply with the same ClientRequestToken, which DynamoDB (and the
    # local one) answers as the success it was: the 99 count as written again, and are in once.
    assert result.errors == [] and result.written == 150
    assert_exactly_once(container, tenant_id, events)
    assert proxy.remaining == 0


# -- the request path when Redis dies at settle and DynamoDB fails too -------------------------
class KillsRedisWhileRunning:
    """Inference that returns zero vectors after killing Redis: the request was admitted,
    its settle finds Redis gone, so its usage must go straight to DynamoDB."""

    def __init__(self, redis_service) -> None:  # type: ignore[no-untyped-def]
        self.redis_service = redis_service

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None):  # type: ignore[no-untyped-def]
        from gateway.adapters.inference import Embeddings

        self.redis_service.kill()
        return Embeddings(count=len(input_ids), dim=384, prompt_tokens=sum(map(len, input_ids)),
                          data=bytes(4 * 384 * len(input_ids)))

    def ready(self) -> bool:
        return True


def test_usage_written_directly_is_charged_once_or_not_at_all(container, own_redis, local_dynamodb):
    from gateway.errors import ServiceUnavailableError
    from gateway.models.api import EmbeddingsRequest
    from gateway.wiring import Container
    from tests.integration.conftest import make_principal

    proxy = FaultyDynamo(local_dynamodb.port)
    try:
        c = Container(container.settings.model_copy(update={
            "dynamodb_endpoint": proxy.url, "redis_url": f"redis://127.0.0.1:{own_redis.port}/0"}),
            inference=KillsRedisWhileRunning(own_redis))
        caller, _ = make_principal(c)
        ok: dict[str, int] = {}
        for fault, calls in (("", 0), ("lost_reply", 1), ("500", 4), ("throttle", 4)):
            if not own_redis.alive:
                own_redis.start()
            proxy.fail(fault, calls)
            request_id = uuid.uuid4().hex
            try:
                result = c.embeddings.create(EmbeddingsRequest(model="all-MiniLM-L6-v2", input=f"fault {fault}"),
                                             caller, request_id)
                ok[request_id] = result.prompt_tokens
                assert fault in ("", "lost_reply")
            except ServiceUnavailableError:  # not recorded, so not answered, so not charged
                assert fault in ("500", "throttle")
            assert proxy.remaining == 0
        rows = list(container.usage.ledger_all(caller.tenant.id, "2000-01-01", "2100-01-01"))
        assert sorted(r["request_id"] for r in rows) == sorted(ok)  # the lost reply counted once
        rollups = container.usage.rollups(caller.tenant.id, "2000-01-01", "2100-01-01")
        assert (sum(int(r["requests"]) for r in rollups), sum(int(r["prompt_tokens"]) for r in rollups)) == (
            len(ok), sum(ok.values()))
    finally:
        proxy.server.shutdown()
