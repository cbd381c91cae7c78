"""Flush work that follows active tenants (`python -m tests.performance.bench_active_tenants`):
a private redis-server and the local DynamoDB (infra/local/dynamodb), no model; about a minute.

1. One flush run for 10 active tenants (20 charged requests each, through the real admission
   and settle scripts), alone and beside 10,000 idle tenants (streams and consumer groups that
   exist, drained and taken out of the index by the real flusher): Redis commands and round
   trips (tests/redis_commands.py), DynamoDB requests, and the run's wall time (the active
   tenants' freshness: every event is in the ledger when the run ends). The peer is the flusher
   as it was, visiting every tenant (`flush(all ids)`), in the same run.
2. What the index costs the request path: the settle script's server time (INFO commandstats)
   with its SADD against the same script without it, interleaved on the same Redis.
3. Reading the whole index: one SMEMBERS on a single node; on a cluster one per hash slot
   (16,384, pipelined), measured on a local 3-master TLS cluster with ``--cluster``.
4. Redis memory: a seeded tenant's admission state after a request, and one usage event
   waiting in a stream (used_memory before and after, per tenant and per event).

Timings are noisy on a shared machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
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

IDLE, ACTIVE, PER_TENANT = 10_000, 10, 20


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def container_for(redis_port: int, dynamodb_port: int) -> Any:
    from gateway.config import Settings
    from gateway.domain.plans import load_catalog
    from gateway.wiring import Container
    from infra.local.services import create_table

    settings = Settings(table_name=f"bench-{uuid.uuid4().hex[:8]}", dynamodb_endpoint=f"http://127.0.0.1:{dynamodb_port}",
                        redis_url=f"redis://127.0.0.1:{redis_port}/0", key_pepper="bench", inference_url=None)
    c = Container(settings)
    c.redis.flushall()
    create_table(c.dynamodb, settings.table_name)
    catalog = load_catalog()
    for plan in catalog.plans:
        c.accounts.put_plan(plan, catalog.version)
    return c


def dynamodb_requests(c: Any) -> Counter:
    calls: Counter = Counter()
    c.dynamodb.meta.events.register("provide-client-params.dynamodb.*",
                                    lambda params, **kwargs: calls.update([kwargs["model"].name]))
    return calls


def measured_run(c: Any, counted: Any, tenant_ids: list[str] | None) -> dict:
    from gateway.services.metering import Flusher

    calls = dynamodb_requests(c)
    flusher = Flusher(redis_client=counted, usage=c.usage, accounts=c.accounts)
    counted.reset()
    started = time.perf_counter()
    result = flusher.flush(tenant_ids)
    seconds = time.perf_counter() - started
    assert not result.errors and result.unflushed == 0, result
    c.dynamodb.meta.events.unregister("provide-client-params.dynamodb.*")
    return {"commands": counted.total, "round_trips": counted.round_trips, "seconds": round(seconds, 3),
            "written": result.written, "dynamodb": dict(calls), "by_command": dict(counted.commands.most_common(6))}


def bench_runs(c: Any, redis_url: str) -> dict:
    from gateway.adapters.active_tenants import SINGLE_NODE_INDEX
    from gateway.adapters.redis_store import RedisLimiter, events_stream, usage_stream
    from gateway.models.records import TenantRecord, rfc3339, utcnow
    from tests.integration.test_active_tenants import charge
    from tests.redis_commands import counting_client

    counted = counting_client(redis_url)
    limiter = RedisLimiter(counted)
    active = []
    for i in range(ACTIVE):
        tenant = f"ten_act{i}_{uuid.uuid4().hex[:6]}"
        c.accounts.create_tenant(TenantRecord(id=tenant, name="a", plan="starter", created_at=rfc3339(utcnow())))
        c.seeder.seed(tenant)
        active.append(tenant)
    report: dict[str, Any] = {"load_before": load()}
    for tenant in active:
        charge(limiter, tenant, PER_TENANT)
    report["alone"] = measured_run(c, counted, None)

    idle = [f"ten_idle{i:05d}" for i in range(IDLE)]
    started = time.perf_counter()
    pipe = c.redis.pipeline(transaction=False)
    for tenant in idle:
        pipe.xadd(usage_stream(tenant), {"x": "1"})
        pipe.xgroup_create(usage_stream(tenant), "flusher", id="$")
        pipe.xgroup_create(events_stream(tenant), "flusher", id="$", mkstream=True)
        pipe.hset(f"{{t:{tenant}}}:cfg", "seeded", "1")
        pipe.sadd(SINGLE_NODE_INDEX, tenant)
    pipe.execute()
    pipe = c.redis.pipeline(transaction=False)
    for tenant in idle:
        pipe.xtrim(usage_stream(tenant), maxlen=0)
    pipe.execute()
    from gateway.services.metering import Flusher

    drained = Flusher(redis_client=c.redis, usage=c.usage, accounts=c.accounts).flush(idle)
    report["idle_setup_s"] = round(time.perf_counter() - started, 1)
    assert drained.idled == IDLE

    for tenant in active:
        charge(limiter, tenant, PER_TENANT)
    report["among_idle"] = measured_run(c, counted, None)
    # the peer: the flusher as it was, visiting every tenant it knows of
    for tenant in active:
        charge(limiter, tenant, PER_TENANT)
    report["every_tenant_visited"] = measured_run(c, counted, active + idle)
    report["load_after"] = load()
    return report


SADD_LINE = "redis.call('SADD', k_active, a_unit)"


def bench_settle(c: Any, rounds: int) -> dict:
    """Server time of settle.lua with and without its SADD, interleaved (INFO commandstats of
    EVALSHA, each script run alone between two reads). The limiter builds the call, so the
    bench follows the script's named arguments (gateway/adapters/lua_scripts.py)."""
    from gateway.adapters.lua_scripts import SETTLE
    from gateway.adapters.redis_store import RedisLimiter, usage_stream
    from gateway.domain.admission import Ticket
    from gateway.domain.plans import Limits
    from gateway.domain.usage import UsageEvent
    from tests.integration.conftest import seed_empty  # the tenant needs no record, only its state

    assert SADD_LINE in SETTLE.source
    scripts = {"with the index SADD": c.redis.register_script(SETTLE.source),
               "without it": c.redis.register_script(SETTLE.source.replace(SADD_LINE, ""))}
    limiter = RedisLimiter(c.redis, wire=False)
    tenant = f"ten_settle_{uuid.uuid4().hex[:6]}"
    month = time.strftime("%Y-%m", time.gmtime())
    seed_empty(limiter, tenant, month=month)
    limits = Limits(requests_per_minute=10**9, tokens_per_minute=10**9, monthly_tokens=10**15,
                    max_concurrent_requests=10**6)
    usec: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(rounds):
        for name, script in scripts.items():
            ticket = Ticket(tenant_id=tenant, key_id="k", key_expires_ms=0, limits=limits, tokens=5,
                            request_id=uuid.uuid4().hex, month=month)
            decision = limiter.admit(ticket)
            event = UsageEvent(request_id=ticket.request_id, tenant_id=tenant, key_id="k", model="m",
                               prompt_tokens=5, timestamp_ms=int(time.time() * 1000))
            limiter._settle = script
            c.redis.config_resetstat()
            for _ in range(50):
                limiter.settle(ticket, decision, charge=True, event=event)
            stats = c.redis.info("commandstats")["cmdstat_evalsha"]
            usec[name].append(stats["usec_per_call"])
        c.redis.delete(usage_stream(tenant))
    return {name: round(sorted(values)[len(values) // 2], 2) for name, values in usec.items()}


def bench_memory(c: Any, tenants: int = 200, events: int = 20_000) -> dict:
    from gateway.adapters.redis_store import RedisLimiter, usage_stream
    from gateway.domain.admission import Ticket
    from gateway.domain.plans import Limits
    from gateway.domain.usage import UsageEvent, ledger_shard
    from tests.integration.conftest import seed_empty

    limiter = RedisLimiter(c.redis)
    month = time.strftime("%Y-%m", time.gmtime())
    limits = Limits(requests_per_minute=10**6, tokens_per_minute=10**9, monthly_tokens=10**15,
                    max_concurrent_requests=1000)

    def request(tenant: str) -> None:
        ticket = Ticket(tenant_id=tenant, key_id="key_0123456789abcdef", key_expires_ms=0, limits=limits,
                        tokens=12, request_id=str(uuid.uuid4()), month=month)
        decision = limiter.admit(ticket)
        limiter.settle(ticket, decision, charge=True, event=UsageEvent(
            request_id=ticket.request_id, tenant_id=tenant, key_id=ticket.key_id, model="all-MiniLM-L6-v2",
            prompt_tokens=12, timestamp_ms=int(time.time() * 1000), cost_nano=decision.cost_nano,
            ledger_shard=ledger_shard(ticket.request_id, 25)))

    used = lambda: c.redis.info("memory")["used_memory"]  # noqa: E731
    before = used()
    for _ in range(tenants):
        tenant = f"ten_{uuid.uuid4().hex[:20]}"
        seed_empty(limiter, tenant, month=month)
        request(tenant)
        c.redis.delete(usage_stream(tenant))
    per_tenant = (used() - before) / tenants
    tenant = f"ten_{uuid.uuid4().hex[:20]}"
    seed_empty(limiter, tenant, month=month)
    before = used()
    for _ in range(events):
        request(tenant)
    return {"tenant_state_bytes": round(per_tenant), "stream_event_bytes": round((used() - before) / events)}


def bench_index_read_single(c: Any) -> dict:
    from gateway.adapters.active_tenants import ActiveTenants

    index = ActiveTenants(c.redis)
    started = time.perf_counter()
    for _ in range(100):
        index.members()
    return {"keys": len(index.index_keys()), "ms": round((time.perf_counter() - started) * 10, 3)}


def bench_index_read_cluster(tmp: Path) -> dict:
    from gateway.adapters.active_tenants import ActiveTenants
    from gateway.adapters.redis_client import connect
    from tests.integration.tls_cluster import start_tls_cluster

    cluster = start_tls_cluster(tmp / "cluster")
    try:
        client = connect(cluster.seed_url, cluster=True, username=None, password=None, timeout_s=2,
                         tls_check_hostname=False, tls_ca_file=str(cluster.pki.ca))
        index = ActiveTenants(client)
        for i in range(1000):  # a thousand active tenants spread over the slots
            client.sadd(index.key_for(f"ten_{i}"), f"ten_{i}")
        index.members()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            found = index.members()
            times.append(time.perf_counter() - started)
        quarter = []
        for _ in range(5):
            started = time.perf_counter()
            index.members(0, 4)
            quarter.append(time.perf_counter() - started)
        assert len(found) == 1000
        return {"keys": len(index.index_keys()), "masters": 3, "ms_all": round(sorted(times)[2] * 1000, 1),
                "ms_one_of_4_workers": round(sorted(quarter)[2] * 1000, 1)}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    from infra.local.services import dynamodb_service, free_port, redis_service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-rounds", type=int, default=40)
    parser.add_argument("--cluster", action="store_true", help="also read the index of a local TLS cluster")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = redis_service(free_port(), tmp / "redis", tmp).start()
        dynamodb = dynamodb_service(free_port(), tmp / "ddb.sqlite3", tmp).start()
        try:
            c = container_for(redis.port, dynamodb.port)
            report = {"runs": bench_runs(c, f"redis://127.0.0.1:{redis.port}/0"),
                      "settle_usec_per_call": bench_settle(c, args.settle_rounds),
                      "index_read_single_node": bench_index_read_single(c),
                      "memory": bench_memory(c)}
            if args.cluster:
                report["index_read_cluster"] = bench_index_read_cluster(tmp)
        finally:
            dynamodb.stop()
            redis.stop()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    runs = report["runs"]
    print(f"one flush run, {ACTIVE} active tenants x {PER_TENANT} events (load {runs['load_before']} -> "
          f"{runs['load_after']}):")
    for name in ("alone", "among_idle", "every_tenant_visited"):
        r = runs[name]
        print(f"  {name:22s} commands {r['commands']:7d}  round trips {r['round_trips']:7d}  "
              f"{r['seconds']:7.3f} s  written {r['written']}  dynamodb {r['dynamodb']}")
    a, b = runs["alone"], runs["among_idle"]
    print(f"  among {IDLE} idle / alone: commands {b['commands'] / a['commands']:.3f}x, "
          f"round trips {b['round_trips'] / a['round_trips']:.3f}x, time {b['seconds'] / a['seconds']:.2f}x")
    print(f"  visiting every tenant / index: commands {runs['every_tenant_visited']['commands'] / b['commands']:.0f}x")
    print(f"settle.lua server time, usec per call (median of {args.settle_rounds}): {report['settle_usec_per_call']}")
    print(f"index read, single node: {report['index_read_single_node']}")
    print(f"redis memory: {report['memory']}")
    if "index_read_cluster" in report:
        print(f"index read, 3-master TLS cluster: {report['index_read_cluster']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
