"""Admission under real concurrency: 4 client processes x 32 threads through HTTP, the
emulator's worker processes running the real invoke handler, one real Redis."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.adapters.redis_store import month_key, tenant_key
from tests.e2e.conftest import Api
from tests.e2e.test_foundation import today

# pytest-xdist (make test): the load and fault tests run one after another on one worker,
# never beside each other (tests/conftest.py, pytest_xdist_make_scheduler).
pytestmark = pytest.mark.xdist_group("heavy")

PROCESSES, THREADS, DURATION_S = 4, 32, 6.0
# A client process goes on past DURATION_S until it has seen each tenant's refusal (the
# bucket, the quota and the cap reached), for at most MAX_DURATION_S: on a loaded machine
# six seconds of spawned, crowded clients may not reach the concurrency cap.
MAX_DURATION_S = 90.0
REFUSALS = ("rate_limit_exceeded", "insufficient_quota", "rate_limit_exceeded")  # per tenant
RATE = {"requests_per_minute": 30, "tokens_per_minute": 1_000_000, "monthly_tokens": 10**9,
        "max_concurrent_requests": 1000}
QUOTA = {"requests_per_minute": 100_000, "tokens_per_minute": 1_000_000, "monthly_tokens": 150,
         "max_concurrent_requests": 1000}
CONCURRENCY = {"requests_per_minute": 100_000, "tokens_per_minute": 1_000_000, "monthly_tokens": 10**9,
               "max_concurrent_requests": 2}


def _hammer(api_url: str, keys: list[str], duration_s: float, threads: int) -> list[tuple]:
    """One client process: threads send embeddings requests for ``duration_s``, and on until
    this process has seen its tenant's refusal (REFUSALS), for at most MAX_DURATION_S."""
    started_at = time.monotonic()
    seen: set[tuple[int, str]] = set()  # (tenant index, error code), shared by the threads

    def more(which: int) -> bool:
        elapsed = time.monotonic() - started_at
        return elapsed < duration_s or ((which, REFUSALS[which]) not in seen and elapsed < MAX_DURATION_S)

    def worker(index: int) -> list[tuple]:
        session, out = requests.Session(), []
        which = index % len(keys)
        session.headers["Authorization"] = f"Bearer {keys[which]}"
        while more(which):
            started = time.time()
            response = session.post(f"{api_url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                                      "input": "hello world"}, timeout=30)
            body = response.json()
            tokens = body["usage"]["prompt_tokens"] if response.status_code == 200 else 0
            code = None if response.status_code == 200 else body["error"]["code"]
            out.append((which, started, time.time(), response.status_code, tokens, code))
            if code is not None:
                seen.add((which, code))
        return out

    with ThreadPoolExecutor(threads) as pool:
        return [row for rows in pool.map(worker, range(threads)) for row in rows]


def make_tenant(admin: Api, limits: dict) -> tuple[str, str]:
    tenant = admin.post("/billing/tenants", json={"name": "load", "plan": "starter"}).json()
    assert admin.patch(f"/billing/tenants/{tenant['id']}", json={"limits": limits}).status_code == 200
    key = admin.post(f"/billing/tenants/{tenant['id']}/keys", json={}).json()["key"]
    return tenant["id"], key


def test_limits_hold_under_multi_process_load(stack, admin):
    tenants = [make_tenant(admin, limits) for limits in (RATE, QUOTA, CONCURRENCY)]
    keys = [key for _, key in tenants]
    r = stack.redis_client()
    inflight_key = tenant_key(tenants[2][0], "inflight")
    peak = {"inflight": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["inflight"] = max(peak["inflight"], r.zcard(inflight_key))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        runs = [pool.apply_async(_hammer, (stack.api_url, keys, DURATION_S, THREADS)) for _ in range(PROCESSES)]
        rows = [row for run in runs for row in run.get(timeout=MAX_DURATION_S + 120)]
    stop.set()
    sampler.join()

    assert all(status in (200, 429) for *_, status, _, _ in rows), {row[3] for row in rows}

    # Requests per minute: in the whole run of t seconds, at most N + N*t/60 admitted.
    rate_ok = [row for row in rows if row[0] == 0 and row[3] == 200]
    span = max(row[2] for row in rows) - min(row[1] for row in rows)
    assert len(rate_ok) <= RATE["requests_per_minute"] * (1 + span / 60)
    assert len(rate_ok) >= RATE["requests_per_minute"]  # and the bucket's capacity was used
    assert {row[5] for row in rows if row[0] == 0 and row[3] == 429} == {"rate_limit_exceeded"}

    # Monthly quota: never exceeded by one token; every reservation charged or refunded.
    quota_tokens = sum(row[4] for row in rows if row[0] == 1)
    assert quota_tokens <= QUOTA["monthly_tokens"]
    assert quota_tokens > QUOTA["monthly_tokens"] - 4
    month = time.strftime("%Y-%m", time.gmtime())
    assert int(r.hget(month_key(tenants[1][0], month), "tok")) == quota_tokens
    assert "insufficient_quota" in {row[5] for row in rows if row[0] == 1}

    # Concurrency: never more than the cap in flight, and the cap was reached.
    assert peak["inflight"] <= CONCURRENCY["max_concurrent_requests"]
    assert "rate_limit_exceeded" in {row[5] for row in rows if row[0] == 2}

    # Metering: every 200 is in the ledger exactly once, no refused request is (waited for
    # with a deadline a loaded machine's flusher meets).
    deadline = time.monotonic() + 120
    for index, (tenant_id, _) in enumerate(tenants):
        expected = [row for row in rows if row[0] == index and row[3] == 200]
        while True:
            usage = admin.get("/billing/usage", params={"start": today(), "end": today(),
                                                        "tenant_id": tenant_id}).json()["data"]
            got = (sum(u["requests"] for u in usage), sum(u["prompt_tokens"] for u in usage))
            if got == (len(expected), sum(row[4] for row in expected)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == (len(expected), sum(row[4] for row in expected)), tenant_id
