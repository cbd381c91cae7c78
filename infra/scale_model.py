"""The scale model (`make scale-model`): today's load projected to 10x, 100x and 1,000x and to
the target (a million tenants, 50,000 requests/s, the hottest tenant at 5,000/s), per
component: MemoryDB ops/s, CPU and memory per shard, Lambda concurrency, DynamoDB write units
per partition and in total, SageMaker instances, flush lag, and cost per million requests.

Every constant is either MEASURED on the development machine by a named benchmark (docs/
BENCHMARKS.md) or an ASSUMPTION about AWS that this machine cannot measure, named as such;
docs/SCALE.md holds the tables this prints and what the design does at each bottleneck.

    python -m infra.scale_model                  # the tables, as Markdown
    python -m infra.scale_model --update docs/SCALE.md   # rewrite the generated part of SCALE.md
    python -m infra.scale_model --check docs/SCALE.md    # exit 1 if SCALE.md is out of date
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.payloads import max_inputs
from gateway.domain.usage import LEDGER_SHARD_EVENTS_PER_S, LEDGER_SHARDS_PER_STREAM, ledger_shards


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    source: str  # "MEASURED: <command>" or "ASSUMPTION: <why>"


C = {
    # -- Redis (MemoryDB): the request path is two scripts per request
    # The money tenant's (graduated price, credit, budgets, a key with limits): the costliest case.
    "admit_us": Constant(59.0, "µs of Redis engine per admit.lua (money on)",
                         "MEASURED: python -m tests.performance.bench_admission_ref (58.3-59.8 in 2 runs)"),
    "settle_us": Constant(38.0, "µs of Redis engine per settle.lua (with the index SADD)",
                          "MEASURED: python -m tests.performance.bench_admission_ref (35.8-40.8 in 2 runs)"),
    "flush_redis_us_per_event": Constant(1.0, "µs of Redis per flushed event (XREADGROUP, XACK, XDEL per batch of 99)",
                                         "MEASURED: bench_active_tenants (111 commands per 200 events), ~2 µs each"),
    "index_key_read_us": Constant(30.0, "µs of client time per index key read (16,384 keys on a cluster)",
                                  "MEASURED: bench_active_tenants --cluster (340-493 ms, 16,384 keys, 3 TLS masters)"),
    "tenant_state_bytes": Constant(5200, "bytes of Redis per seeded tenant",
                                   "MEASURED: bench_active_tenants (3,600-5,200 in 2 runs)"),
    "stream_event_bytes": Constant(140, "bytes of Redis per usage event waiting in a stream",
                                   "MEASURED: bench_active_tenants"),
    "shard_engine_budget": Constant(0.6, "share of one MemoryDB shard's engine thread to plan for",
                                    "ASSUMPTION: headroom for failover, resharding and bursts"),
    "shard_memory_gb": Constant(10.0, "GB per MemoryDB shard to plan for (db.r7g.large: 13.07 GiB)",
                                "ASSUMPTION: AWS node size, 25% headroom"),
    "redis_node_hour": Constant(0.365, "$ per db.r7g.large node-hour (MemoryDB, us-east-1)",
                                "ASSUMPTION: AWS list price, re-check"),
    # -- Lambda
    "invoke_s": Constant(0.040, "s billed per tenant request (1,769 MB)", "ASSUMPTION: docs/OPERATIONS.md cost model"),
    "worker_cpu_ms_per_event": Constant(0.22, "ms of one core per flushed event (this machine)",
                                        "MEASURED: python -m tests.performance.bench_flush_workers"),
    "lambda_core_speed": Constant(0.6, "a Lambda arm64 core's Python speed relative to this machine's core",
                                  "ASSUMPTION: Graviton2 vs Zen 5 at ~3.4 GHz"),
    "worker_busy_share": Constant(0.5, "share of a worker's core to plan for", "ASSUMPTION: headroom"),
    "tx_latency_s": Constant(0.025, "s per 100-item TransactWriteItems", "ASSUMPTION: AWS, not measurable here"),
    "flusher_lanes": Constant(4, "parallel transactions per sharded tenant (MAAS_FLUSHER_LANES)", "template.yaml"),
    "idle_s": Constant(1.0, "s a worker waits after a pass that found nothing (MAAS_FLUSHER_IDLE_S)", "template.yaml"),
    # -- DynamoDB
    "partition_wcu": Constant(1000, "write units/s one partition takes", "ASSUMPTION: DynamoDB's documented limit"),
    "rollup_share": Constant(0.05, "rollup updates per ledger item at scale (one per tenant-cell per pass)",
                             "MEASURED: bench_flusher (1 per 99 for a busy cell); 5% covers small tenants"),
    # -- inference
    "tokens_per_request": Constant(56, "tokens per request (4 inputs of 14)",
                                   "ASSUMPTION: the serving benchmark's sentences, 4 per request"),
    "gpu_tokens_per_s": Constant(1_000_000, "tokens/s one ml.g5.xlarge serves at the scaling target",
                                 "ASSUMPTION: no GPU here; the inference branch projects 7-15 M tokens/s on an "
                                 "H200, an A10G has ~1/8 of its fp16 rate; CPU measured 14,824 (bench cpu)"),
    "gpu_hour": Constant(1.408, "$ per ml.g5.xlarge hour", "ASSUMPTION: AWS list price (docs/OPERATIONS.md)"),
    # -- money
    "variable_per_million": Constant(10.10, "$ per million requests (API Gateway, Lambda, DynamoDB, logs, WAF, ...)",
                                     "docs/OPERATIONS.md cost model"),
    "lambda_gb_s": Constant(0.0000133334, "$ per GB-s (arm64)", "ASSUMPTION: AWS list price"),
    "fixed_month": Constant(100.0, "$ per month of VPC endpoints, WAF, alarms, keys", "docs/OPERATIONS.md"),
}


def v(name: str) -> float:
    return C[name].value


@dataclass(frozen=True)
class Load:
    name: str
    requests_per_s: float
    tenants: int
    hottest_per_s: float
    active_share: float = 0.05  # tenants with a request in a given minute ("most of them idle")

    @property
    def active(self) -> int:
        return max(1, round(self.tenants * self.active_share))


# Today: what the default stack is priced at in docs/OPERATIONS.md (a steady 100 requests/s),
# over 2,000 tenants, the busiest at 20 requests/s.
TODAY = Load("today", 100, 2_000, 20)
LOADS = [TODAY, *(Load(f"{k:,}x", TODAY.requests_per_s * k, TODAY.tenants * k, TODAY.hottest_per_s * k)
                  for k in (10, 100, 1000)),
         Load("target", 50_000, 1_000_000, 5_000)]


@dataclass(frozen=True)
class Projection:
    load: Load
    redis: dict[str, float]
    lambdas: dict[str, float]
    dynamodb: dict[str, float]
    sagemaker: dict[str, float]
    flush: dict[str, float]
    cost: dict[str, float]


def worker_events_per_s() -> float:
    """What one flush worker (one core) drains, CPU-bound, at the planned share of its core."""
    return v("worker_busy_share") * v("lambda_core_speed") * 1000 / v("worker_cpu_ms_per_event")


def project(load: Load) -> Projection:
    r, h = load.requests_per_s, load.hottest_per_s
    # -- Redis: the request path, the flush, the index; shards by engine time and by memory
    request_us = r * (v("admit_us") + v("settle_us"))
    flush_us = r * v("flush_redis_us_per_event")
    engine_share = (request_us + flush_us) / 1e6
    lag_s = 2 * v("idle_s") + 1  # an event waits a pause, a pass and its batch (below)
    memory_gb = (load.tenants * v("tenant_state_bytes") + r * lag_s * v("stream_event_bytes")) / 1e9
    shards = max(1, math.ceil(engine_share / v("shard_engine_budget")), math.ceil(memory_gb / v("shard_memory_gb")))
    hottest_slot = h * (v("admit_us") + v("settle_us") + v("flush_redis_us_per_event")) / 1e6
    redis = {"ops_per_s": 2 * r + r * 0.6, "shards": shards, "ops_per_s_per_shard": (2.6 * r) / shards,
             "engine_per_shard": engine_share / shards, "hottest_tenant_of_a_shard": hottest_slot,
             "memory_gb_per_shard": memory_gb / shards}
    # -- flush workers: CPU-bound per worker; a stream part is drained by one worker, and a hot
    # tenant's stream has a part per 8 ledger shards, each with its own rollup cells
    per_worker = worker_events_per_s()
    workers = max(1, math.ceil(r / per_worker))
    hot_shards = ledger_shards(int(h * 60))
    hot_parts = math.ceil(hot_shards / LEDGER_SHARDS_PER_STREAM)
    busiest_part = h * min(hot_shards, LEDGER_SHARDS_PER_STREAM) / hot_shards
    one_worker_full = min(per_worker / v("worker_busy_share"), v("flusher_lanes") * 99 / v("tx_latency_s"))
    # every worker reads all 16,384 index keys while there are no more workers than stream parts (8)
    index_read_s = 16_384 / max(1, workers / 8) * v("index_key_read_us") / 1e6
    flush = {"workers": workers, "events_per_worker_s": per_worker, "hottest_parts": hot_parts,
             "hottest_busiest_part_per_s": busiest_part, "one_worker_full_per_s": one_worker_full,
             "lag_s": lag_s + index_read_s if one_worker_full >= busiest_part else math.inf,
             "index_read_s": index_read_s}
    lambdas = {"invoke_concurrency": r * v("invoke_s"), "flush_workers": workers, "dispatcher": 1}
    # -- DynamoDB: ledger items (2 units in a transaction) and rollup updates
    ledger_wcu = 2 * r
    rollup_wcu = 2 * r * v("rollup_share")
    dynamodb = {"wcu_total": ledger_wcu + rollup_wcu, "ledger_shards_hottest": hot_shards,
                "wcu_hottest_ledger_partition": 2 * h / hot_shards,
                # each batch of a stream part (99 x lanes events) updates its shards' cells, 2 units each
                "wcu_hottest_rollup_partition": 2 * h / (99 * v("flusher_lanes"))
                * min(hot_shards, LEDGER_SHARDS_PER_STREAM),
                "wcu_per_partition_limit": v("partition_wcu")}
    instances = max(1, math.ceil(r * v("tokens_per_request") / v("gpu_tokens_per_s")))
    sagemaker = {"tokens_per_s": r * v("tokens_per_request"), "instances": instances}
    # -- cost per million requests: the per-request part and the fixed part over the month's requests
    month_s, million = 730 * 3600, 1e6
    monthly = {"gpu": instances * v("gpu_hour") * 730, "memorydb": shards * 2 * v("redis_node_hour") * 730,
               "flush": (workers * 1.769 + 0.5) * month_s * v("lambda_gb_s"), "fixed": v("fixed_month")}
    per_million_fixed = sum(monthly.values()) / (r * month_s / million)
    cost = {"variable": v("variable_per_million"), "fixed_share": per_million_fixed,
            "total": v("variable_per_million") + per_million_fixed, **{f"month_{k}": m for k, m in monthly.items()}}
    return Projection(load, redis, lambdas, dynamodb, sagemaker, flush, cost)


def _n(x: float, digits: int = 0) -> str:
    if x == math.inf:
        return "grows"
    return f"{x:,.{digits}f}"


def render() -> str:
    ps = [project(load) for load in LOADS]
    head = "| | " + " | ".join(p.load.name for p in ps) + " |\n|---|" + "---|" * len(ps) + "\n"

    def row(label: str, values: list[str]) -> str:
        return f"| {label} | " + " | ".join(values) + " |\n"

    out = ["### Load\n\n", head,
           row("requests/s", [_n(p.load.requests_per_s) for p in ps]),
           row("tenants (active in a minute: 5%)", [f"{_n(p.load.tenants)} ({_n(p.load.active)})" for p in ps]),
           row("hottest tenant, requests/s", [_n(p.load.hottest_per_s) for p in ps]),
           "\n### MemoryDB (Redis)\n\n", head,
           row("commands/s (2 scripts per request + flush)", [_n(p.redis["ops_per_s"]) for p in ps]),
           row("shards (engine time or memory)", [_n(p.redis["shards"]) for p in ps]),
           row("commands/s per shard", [_n(p.redis["ops_per_s_per_shard"]) for p in ps]),
           row("engine busy per shard", [f"{100 * p.redis['engine_per_shard']:.0f}%" for p in ps]),
           row("hottest tenant's share of its shard's engine", [f"{100 * p.redis['hottest_tenant_of_a_shard']:.0f}%"
                                                              for p in ps]),
           row("memory per shard, GB", [_n(p.redis["memory_gb_per_shard"], 2) for p in ps]),
           "\n### Lambda\n\n", head,
           row("InvokeFunction concurrency", [_n(p.lambdas["invoke_concurrency"]) for p in ps]),
           row("flush workers (FlusherFunction)", [_n(p.lambdas["flush_workers"]) for p in ps]),
           "\n### DynamoDB\n\n", head,
           row("write units/s, total", [_n(p.dynamodb["wcu_total"]) for p in ps]),
           row("hottest tenant's ledger shards (per day)", [_n(p.dynamodb["ledger_shards_hottest"]) for p in ps]),
           row("write units/s on its busiest ledger partition (limit 1,000)",
               [_n(p.dynamodb["wcu_hottest_ledger_partition"]) for p in ps]),
           row("write units/s on its rollup partition (limit 1,000, splits for heat)",
               [_n(p.dynamodb["wcu_hottest_rollup_partition"]) for p in ps]),
           "\n### SageMaker\n\n", head,
           row("tokens/s", [_n(p.sagemaker["tokens_per_s"]) for p in ps]),
           row("ml.g5.xlarge instances", [_n(p.sagemaker["instances"]) for p in ps]),
           "\n### Flush\n\n", head,
           row("events/s one worker drains (planned)", [_n(p.flush["events_per_worker_s"]) for p in ps]),
           row("hottest tenant: stream parts (one worker each)", [_n(p.flush["hottest_parts"]) for p in ps]),
           row("its busiest part, events/s", [_n(p.flush["hottest_busiest_part_per_s"]) for p in ps]),
           row("what one worker drains of one part, events/s (a whole core)",
               [_n(p.flush["one_worker_full_per_s"]) for p in ps]),
           row("index read per worker pass, s", [_n(p.flush["index_read_s"], 2) for p in ps]),
           row("flush lag, s (p99 goal: 60)", [_n(p.flush["lag_s"], 1) for p in ps]),
           "\n### Cost per million requests (USD)\n\n", head,
           row("per request (API Gateway, Lambda, DynamoDB, logs, WAF, X-Ray)", [_n(p.cost["variable"], 2)
                                                                                for p in ps]),
           row("fixed share (GPU, MemoryDB, flush workers, endpoints)", [_n(p.cost["fixed_share"], 2) for p in ps]),
           row("**total**", [f"**{_n(p.cost['total'], 2)}**" for p in ps]),
           "\n### Constants\n\n| constant | value | unit | source |\n|---|---|---|---|\n",
           *(f"| `{name}` | {c.value:g} | {c.unit} | {c.source} |\n" for name, c in C.items()),
           f"\nDerived: one flush worker plans for {worker_events_per_s():,.0f} events/s "
           f"(`FlushWorkerEventsPerMinute` {60 * worker_events_per_s():,.0f}); a ledger partition takes "
           f"{LEDGER_SHARD_EVENTS_PER_S} events/s by design (`ledger_shards`); the largest request that "
           f"fits Lambda's 6 MB answer is {max_inputs(384, 'float')} inputs as float and 2,048 (all) as base64.\n"]
    return "".join(out)


BEGIN = "<!-- scale-model:begin (python -m infra.scale_model --update docs/SCALE.md) -->"
END = "<!-- scale-model:end -->"


def spliced(document: str, tables: str) -> str:
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{tables}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--update", type=Path, metavar="SCALE_MD")
    group.add_argument("--check", type=Path, metavar="SCALE_MD")
    args = parser.parse_args(argv)
    tables = render()
    if args.update:
        args.update.write_text(spliced(args.update.read_text(), tables))
    elif args.check:
        current = args.check.read_text()
        if spliced(current, tables) != current:
            print(f"{args.check} is out of date: run python -m infra.scale_model --update {args.check}",
                  file=sys.stderr)
            return 1
    else:
        print(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
