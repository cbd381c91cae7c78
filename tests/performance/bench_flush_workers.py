"""Parallel drain (`python -m tests.performance.bench_flush_workers`): flush workers as separate
processes (as Lambda runs them), each draining its share of the active tenants (by hash slot),
against one worker, on the local stack's own services (a private redis-server and the local
DynamoDB, infra/local/dynamodb, which takes concurrent transactions); no model. About 1-2 min.

1. 4 workers against 1: ``--tenants`` tenants with ``--events`` usage events each, waiting in
   their streams and listed in the active index; each worker runs passes until one finds
   nothing. Events/s from the start signal (workers already loaded) to the last exit, and the
   ratio. Also each worker's CPU seconds per 1,000 events (a constant of docs/SCALE.md).
2. One hot tenant whose ledger is sharded (8 shards): one worker with 1 lane against 4 lanes
   (its shards' transactions committed in parallel), batches of 99 x lanes.

Both sides of each ratio run in the same process tree on the same services, back to back.
Timings are noisy on a shared 2-core machine (the DynamoDB server, Redis and the workers
share it): the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODEL = "all-MiniLM-L6-v2"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def settings_for(redis_port: int, dynamodb_port: int, table: str) -> Any:
    from gateway.config import Settings

    return Settings(table_name=table, dynamodb_endpoint=f"http://127.0.0.1:{dynamodb_port}",
                    redis_url=f"redis://127.0.0.1:{redis_port}/0", key_pepper="bench", inference_url=None)


def fill(settings: Any, tenants: int, events: int, shards: int = 1) -> list[str]:
    """Streams holding the events, tenants listed in the index (as the settle script does)."""
    from gateway.adapters.active_tenants import ActiveTenants
    from gateway.adapters.redis_store import usage_stream
    from gateway.domain.usage import UsageEvent, ledger_shard
    from gateway.wiring import Container

    c = Container(settings)
    ids = [f"ten_w{i}_{uuid.uuid4().hex[:6]}" for i in range(tenants)]
    now_ms = int(time.time() * 1000)
    pipe = c.redis.pipeline(transaction=False)
    for tenant in ids:
        pipe.hset(f"{{t:{tenant}}}:cfg", "seeded", "1")
        for i in range(events):
            request_id = uuid.uuid4().hex
            pipe.xadd(usage_stream(tenant), UsageEvent(
                request_id=request_id, tenant_id=tenant, key_id="key_b", model=MODEL, prompt_tokens=12,
                timestamp_ms=now_ms + i, ledger_shard=ledger_shard(request_id, shards)).to_fields())
    pipe.execute()
    ActiveTenants(c.redis).mark(ids)
    return ids


def worker(settings: Any, part: int, parts: int, lanes: int, ready: Any, go: Any, out: Any) -> None:
    from gateway.services.metering import Flusher
    from gateway.wiring import Container

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    c = Container(settings)
    flusher = Flusher(redis_client=c.redis, usage=c.usage, accounts=c.accounts, lanes=lanes,
                      max_batches_per_stream=10**6)
    c.redis.ping()
    c.accounts.get_plan("__warm__")
    ready.set()
    go.wait()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    written = 0
    while True:
        result = flusher.flush(part=part, parts=parts)
        assert not result.errors, result.errors
        written += result.written
        if not result.read:
            break
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"part": part, "written": written,
             "cpu_s": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 3)})


def drain(settings: Any, parts: int, lanes: int = 1) -> dict:
    """Start ``parts`` loaded workers, then time them to the last exit."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    go = context.Event()
    readies, procs = [], []
    for part in range(parts):
        ready = context.Event()
        proc = context.Process(target=worker, args=(settings, part, parts, lanes, ready, go, out))
        proc.start()
        readies.append(ready)
        procs.append(proc)
    for ready in readies:
        assert ready.wait(120), "a worker did not start"
    started = time.perf_counter()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    seconds = time.perf_counter() - started
    for proc in procs:
        proc.join(30)
    written = sum(r["written"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    return {"workers": parts, "lanes": lanes, "written": written, "seconds": round(seconds, 2),
            "events_per_s": round(written / seconds, 1), "cpu_s_per_1000_events": round(1000 * cpu / written, 3)}


def fresh_table(settings: Any) -> Any:
    from gateway.wiring import Container
    from infra.local.services import create_table

    settings = settings.model_copy(update={"table_name": f"bench-{uuid.uuid4().hex[:8]}"})
    create_table(Container(settings).dynamodb, settings.table_name)
    return settings


def main(argv: list[str] | None = None) -> int:
    from infra.local.services import dynamodb_service, free_port, redis_service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=40)
    parser.add_argument("--events", type=int, default=100, help="events per tenant")
    parser.add_argument("--hot-events", type=int, default=2000, help="events of the one hot tenant")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    report: dict[str, Any] = {"load_before": load()}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = redis_service(free_port(), tmp / "redis", tmp).start()
        dynamodb = dynamodb_service(free_port(), tmp / "ddb.sqlite3", tmp).start()
        try:
            base = settings_for(redis.port, dynamodb.port, "unused")
            runs = []
            for parts in (1, 4, 1, 4):  # twice, interleaved: the machine's load moves
                settings = fresh_table(base)
                fill(settings, args.tenants, args.events)
                runs.append(drain(settings, parts))
            report["workers"] = runs
            hot = []
            for lanes in (1, 4, 1, 4):
                settings = fresh_table(base)
                fill(settings, 1, args.hot_events, shards=8)
                hot.append(drain(settings, 1, lanes))
            report["hot_tenant_lanes"] = hot
        finally:
            dynamodb.stop()
            redis.stop()
    report["load_after"] = load()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.tenants} tenants x {args.events} events, local DynamoDB (load {report['load_before']} -> "
          f"{report['load_after']}):")
    for r in report["workers"]:
        print(f"  {r['workers']} worker(s): {r['written']} events in {r['seconds']} s = {r['events_per_s']} events/s, "
              f"{r['cpu_s_per_1000_events']} CPU s per 1,000 events")
    one = [r["events_per_s"] for r in report["workers"] if r["workers"] == 1]
    four = [r["events_per_s"] for r in report["workers"] if r["workers"] == 4]
    print(f"  4 workers / 1 worker: {' and '.join(f'{f / o:.2f}x' for o, f in zip(one, four, strict=True))}")
    print(f"one hot tenant, {args.hot_events} events over 8 ledger shards, one worker:")
    for r in report["hot_tenant_lanes"]:
        print(f"  {r['lanes']} lane(s): {r['seconds']} s = {r['events_per_s']} events/s")
    single = [r["events_per_s"] for r in report["hot_tenant_lanes"] if r["lanes"] == 1]
    laned = [r["events_per_s"] for r in report["hot_tenant_lanes"] if r["lanes"] == 4]
    print(f"  4 lanes / 1 lane: {' and '.join(f'{f / o:.2f}x' for o, f in zip(single, laned, strict=True))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
