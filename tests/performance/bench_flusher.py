"""Metering benchmarks (`python -m tests.performance.bench_flusher`), on a private
redis-server and moto's DynamoDB server; no model needed.

1. DynamoDB write requests per 1,000 tenant requests. 1,000 requests go through the real
   hot path (EmbeddingsService: tokenizer, admission and settle scripts on Redis, the Store
   on moto) with a stub in place of the inference server (it returns zero vectors; it does
   not touch DynamoDB either way); then one flush. Every HTTP request to moto is counted
   (botocore's before-send event), by operation and phase. Goals: 0 writes on the request
   path while Redis is up; <= 1 rollup write per tenant x day x model per flush batch.
2. Flusher throughput, events/s into moto (relative only: moto handles a few hundred
   writes/s, DynamoDB far more), 4 tenants, for batch sizes 99 (one transaction per cell),
   25, and 1 (one transaction per event: what writing each event on its own would cost).
   One stream at a time: moto's server answers 500 to concurrent transactions, so
   MAAS_FLUSHER_CONCURRENCY cannot be measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
MODEL = "all-MiniLM-L6-v2"


class HttpCounter:
    """Counts HTTP requests to DynamoDB (each retry too), by operation, and the items of
    each TransactWriteItems (ledger puts, rollup updates)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter = Counter()
        self.items: Counter = Counter()
        client.meta.events.register("before-send.dynamodb.*", self._sent)
        client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", self._transaction)

    def _sent(self, request: Any, **kwargs: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        name = (target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]
        self.calls[name] += 1

    def _transaction(self, params: dict, **kwargs: Any) -> None:
        for item in params.get("TransactItems", []):
            self.items["rollup" if "Update" in item else "ledger"] += 1

    def writes(self) -> int:
        return sum(n for op, n in self.calls.items() if op in WRITES)

    def reset(self) -> None:
        self.calls.clear()
        self.items.clear()


class StubInference:
    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None) -> Any:
        from gateway.adapters.inference import Embeddings

        return Embeddings(count=len(input_ids), dim=384, prompt_tokens=sum(map(len, input_ids)),
                          data=bytes(4 * 384 * len(input_ids)))

    def ready(self) -> bool:
        return True


def setup(redis_port: int, moto_port: int) -> Any:
    import boto3
    from botocore.config import Config

    from gateway.config import Settings
    from gateway.domain.plans import load_catalog
    from gateway.wiring import Container
    from infra.local.services import create_table

    settings = Settings(table_name=f"bench-{uuid.uuid4().hex[:8]}", dynamodb_endpoint=f"http://127.0.0.1:{moto_port}",
                        redis_url=f"redis://127.0.0.1:{redis_port}/0", key_pepper="bench", inference_url=None)
    # moto slows down as a table grows: a fresh table per phase, and patience for a
    # 100-item transaction (the container's 5 s read timeout is for DynamoDB itself)
    dynamodb = boto3.session.Session(region_name=settings.aws_region).client(
        "dynamodb", endpoint_url=settings.dynamodb_endpoint,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=120))
    c = Container(settings, dynamodb=dynamodb)
    c.redis.flushall()
    create_table(c.dynamodb, c.settings.table_name)
    catalog = load_catalog()
    for plan in catalog.plans:
        c.accounts.put_plan(plan, catalog.version)
    return c


def tenants(c: Any, n: int) -> list[Any]:
    from gateway.domain.keys import new_key
    from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
    from gateway.services.auth import Principal

    out = []
    for i in range(n):
        tenant = TenantRecord(id=f"ten_bench{i}_{uuid.uuid4().hex[:6]}", name=f"b{i}", plan="pro",
                              created_at=rfc3339(utcnow()))
        c.accounts.create_tenant(tenant)
        key = KeyRecord(id=new_key().key_id, tenant_id=tenant.id, scopes=["inference"], key_hash="x",
                        created_at=rfc3339(utcnow()))
        out.append(Principal(key=key, tenant=tenant))
    return out


def bench_writes_per_request(c: Any, requests: int, n_tenants: int) -> dict:
    from gateway.adapters.tokenizer import ModelTokenizer
    from gateway.domain.registry import MINILM
    from gateway.models.api import EmbeddingsRequest
    from gateway.services.embeddings import EmbeddingsService
    from gateway.services.metering import Flusher

    principals = tenants(c, n_tenants)
    service = EmbeddingsService(tokenizers={MINILM.id: ModelTokenizer(MINILM)}, limiter=c.limiter,
                                inference=StubInference(), usage=c.usage, limits=c.limits, gate=c.gate)
    counter = HttpCounter(c.dynamodb)
    for principal in principals:  # warm the plan cache, as a running function has it
        c.limits.for_tenant(principal.tenant)
    counter.reset()
    started = time.perf_counter()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # no EMF lines
        for i in range(requests):
            body = EmbeddingsRequest(model=MODEL, input=f"benchmark request number {i}")
            service.create(body, principals[i % n_tenants], request_id=uuid.uuid4().hex)
    request_s = time.perf_counter() - started
    on_request_path = dict(counter.calls)
    request_writes = counter.writes()
    counter.reset()

    flusher = Flusher(redis_client=c.redis, usage=c.usage, accounts=c.accounts)
    batches: list[set] = []
    original = flusher._write

    def observed(stream: str, entries: list, result: Any) -> None:
        from gateway.domain.usage import UsageEvent

        batches.append({(e.tenant_id, e.date, e.model) for e in (UsageEvent.from_fields(f) for _, f in entries if f)})
        original(stream, entries, result)

    flusher._write = observed  # type: ignore[method-assign]
    started = time.perf_counter()
    result = flusher.flush([p.tenant.id for p in principals])
    flush_s = time.perf_counter() - started
    cells_per_batch = sum(len(b) for b in batches)
    return {
        "requests": requests, "tenants": n_tenants, "request_path_s": round(request_s, 2),
        "request_path_dynamodb_http": on_request_path, "request_path_writes": request_writes,
        "flush": {"written": result.written, "batches": result.batches, "seconds": round(flush_s, 2),
                  "http": dict(counter.calls), "ledger_puts": counter.items["ledger"],
                  "rollup_updates": counter.items["rollup"], "cells_summed_over_batches": cells_per_batch},
        "dynamodb_write_requests_per_1000_requests": round((request_writes + counter.writes()) * 1000 / requests, 1),
        "rollup_writes_per_cell_per_batch": round(counter.items["rollup"] / max(cells_per_batch, 1), 3),
    }


def bench_throughput(c: Any, events: int, batch_size: int, n_tenants: int, concurrency: int = 1) -> dict:
    from gateway.adapters.redis_store import usage_stream
    from gateway.domain.usage import UsageEvent
    from gateway.models.records import TenantRecord, rfc3339, utcnow
    from gateway.services.metering import Flusher

    ids = []
    for i in range(n_tenants):
        tid = f"ten_tp{batch_size}_{i}_{uuid.uuid4().hex[:6]}"
        c.accounts.create_tenant(TenantRecord(id=tid, name="tp", plan="pro", created_at=rfc3339(utcnow())))
        ids.append(tid)
    now_ms = int(time.time() * 1000)
    pipe = c.redis.pipeline(transaction=False)
    for i in range(events):
        tid = ids[i % n_tenants]
        pipe.xadd(usage_stream(tid), UsageEvent(request_id=uuid.uuid4().hex, tenant_id=tid, key_id="k", model=MODEL,
                                                prompt_tokens=12, timestamp_ms=now_ms + i).to_fields())
    pipe.execute()
    counter = HttpCounter(c.dynamodb)
    flusher = Flusher(redis_client=c.redis, usage=c.usage, accounts=c.accounts, batch_size=batch_size,
                      max_batches_per_stream=10**6, concurrency=concurrency)
    started = time.perf_counter()
    result = flusher.flush(ids)
    seconds = time.perf_counter() - started
    assert result.written == events and not result.errors, result
    c.dynamodb.meta.events.unregister("before-send.dynamodb.*", counter._sent)
    return {"batch_size": batch_size, "concurrency": concurrency, "events": events, "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds, 1), "transactions": counter.calls["TransactWriteItems"]}


def main(argv: list[str] | None = None) -> int:
    from infra.local.services import free_port, moto_service, redis_service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--events", type=int, default=1000, help="events per throughput run (batch 99 and 25)")
    parser.add_argument("--single-events", type=int, default=400, help="events for the batch-size-1 run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        redis = redis_service(free_port(), Path(tmp) / "redis", Path(tmp)).start()
        moto = moto_service(free_port(), Path(tmp)).start()
        try:
            report = {"writes": bench_writes_per_request(setup(redis.port, moto.port), args.requests, args.tenants),
                      "throughput": [bench_throughput(setup(redis.port, moto.port), n, size, 4, threads)
                                     for n, size, threads in ((args.events, 99, 1), (args.events, 25, 1),
                                                              (args.single_events, 1, 1))]}
        finally:
            moto.stop()
            redis.stop()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    w = report["writes"]
    print(f"{w['requests']} tenant requests over {w['tenants']} tenants (Redis up):")
    print(f"  DynamoDB HTTP requests on the request path: {w['request_path_dynamodb_http'] or 'none'}"
          f" -> writes: {w['request_path_writes']}")
    f = w["flush"]
    print(f"  flush: {f['written']} events in {f['batches']} batches, {f['http'].get('TransactWriteItems', 0)} "
          f"TransactWriteItems ({f['ledger_puts']} ledger puts, {f['rollup_updates']} rollup updates "
          f"for {f['cells_summed_over_batches']} cell-batches)")
    print(f"  DynamoDB write requests per 1,000 tenant requests: {w['dynamodb_write_requests_per_1000_requests']}")
    print(f"  rollup writes per tenant x day x model per flush batch: {w['rollup_writes_per_cell_per_batch']}")
    print("flusher throughput into moto (relative only):")
    for t in report["throughput"]:
        print(f"  batch {t['batch_size']:>3}: {t['events']} events in {t['seconds']} s = {t['events_per_s']} events/s "
              f"({t['transactions']} transactions)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
