"""Gateway benchmarks, each against a peer in the same run (`make bench-gateway`).

The tenant is the one money makes most work for: a graduated price (two tiers), prepaid
credit (a grant), a budget with alert thresholds, and a key with limits of its own.

1. Admission: requests/s of today's scripts (admit.lua + settle.lua, money on) vs the
   round-1 scripts (tests/performance/round1/, rate limits and quota only), same Redis, same
   client, interleaved; and the same against a pipelined INCR (the floor of a round trip).
2. Redis round trips per tenant request, counted on the client's connections: goal exactly 2.
3. Gateway overhead: the invoke handler (what Lambda calls: the thin POST /v1/embeddings
   route, auth, parse, tokenize, admit, the inference hop, settle, render, its logs and
   metrics) vs the same inference hop alone (the handler's own client, same token ids), and
   vs the same request through the Powertools resolver and its decorators (the route before
   issue 22), interleaved; goal <= 1.0 ms added at p50 and <= 2.0 ms at p99. Then where the
   handler's time goes, stage by stage, and what the gateway's own work costs in Lambda.
4. Cold start: importing the invoke handler module vs a bare `import boto3`; goal <= 1.3x.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
import urllib3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.adapters.redis_store import MONTH_TTL_S, month_key, tenant_key, usage_stream  # noqa: E402
from gateway.domain.admission import Ticket, Verdict  # noqa: E402
from gateway.domain.plans import Limits, Plan, Tier  # noqa: E402
from gateway.domain.usage import UsageEvent  # noqa: E402
from infra.local.apigw import LambdaContext, read_functions  # noqa: E402
from infra.local.services import free_port  # noqa: E402
from infra.local.stack import LocalStack, StackConfig  # noqa: E402
from infra.local.template import load_template  # noqa: E402
from tests.performance.interleave import interleave  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
TEXT = "The quick brown fox jumps over the lazy dog."
BENCH_PLAN = Plan(
    name="bench", currency="USD",
    limits=Limits(requests_per_minute=10**7, tokens_per_minute=10**9, monthly_tokens=10**13,
                  max_concurrent_requests=10**4),
    tiers={MODEL: [Tier(up_to=1_000_000, price_per_1k_tokens=Decimal("0.02")),
                   Tier(up_to=None, price_per_1k_tokens=Decimal("0.01"))]},
)


# Lambda's public price for arm64 (Graviton) in us-east-1, per GB-second of the first 6 billion
# GB-seconds a month (aws.amazon.com/lambda/pricing); x86 is 0.0000166667.
ARM64_USD_PER_GB_S = Decimal("0.0000133334")
MEMORY_MB = 1769  # the size at which a function gets one full vCPU


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. admission ------------------------------------------------------------------------------

class Round1Limiter:
    """The round-1 admission and settlement scripts, called as round 1 called them."""

    def __init__(self, client: redis.Redis) -> None:
        here = Path(__file__).parent / "round1"
        self._admit = client.register_script((here / "admit.lua").read_text())
        self._settle = client.register_script((here / "settle.lua").read_text())

    def request(self, tenant_id: str, ticket: Ticket, fields: list[str]) -> None:
        t, limits = tenant_id, ticket.limits
        verdict = self._admit(
            [tenant_key(t, "keys"), tenant_key(t, "status"), tenant_key(t, "buckets"),
             tenant_key(t, f"quota:{ticket.month}"), tenant_key(t, "inflight")],
            [ticket.key_id, 0, limits.requests_per_minute, limits.tokens_per_minute, limits.monthly_tokens,
             limits.max_concurrent_requests, ticket.tokens, ticket.request_id, 60_000, MONTH_TTL_S])[0]
        assert verdict in (b"ok", "ok"), verdict
        self._settle([tenant_key(t, "inflight"), tenant_key(t, f"quota:{ticket.month}"), usage_stream(t)],
                     [ticket.request_id, "charge", ticket.tokens, *fields])


def event_for(ticket: Ticket, cost_nano: int = 0, debits: str = "", tier_tokens: str = "") -> UsageEvent:
    return UsageEvent(request_id=ticket.request_id, tenant_id=ticket.tenant_id, key_id=ticket.key_id, model=MODEL,
                      prompt_tokens=ticket.tokens, timestamp_ms=int(time.time() * 1000), cost_nano=cost_nano,
                      debits=debits, tier_tokens=tier_tokens)


def bench_admission(container: Any, tenant_id: str, key_id: str, seconds: float) -> dict:
    """Today's admit + settle for the money tenant vs round 1's for a plain one, and a pipelined
    INCR, interleaved in short rounds so drift on a shared machine hits all alike. Server-side
    microseconds per script call come from INFO commandstats, reset around each phase."""
    client, limiter = container.redis, container.limiter
    pricing = container.limits.plan(BENCH_PLAN.name).pricing(MODEL)
    round1 = Round1Limiter(client)
    month = time.strftime("%Y-%m", time.gmtime())

    def ticket(tenant: str) -> Ticket:
        return Ticket(tenant_id=tenant, key_id=key_id, key_expires_ms=0, limits=BENCH_PLAN.limits, tokens=12,
                      request_id=uuid.uuid4().hex, month=month, pricing=pricing)

    def today() -> None:
        t = ticket(tenant_id)
        decision = limiter.admit(t)
        assert decision.verdict is Verdict.OK, decision
        limiter.settle(t, decision, charge=True, event=event_for(t, decision.cost_nano, decision.debits,
                                                                  decision.tier_tokens))

    def previous() -> None:
        t = ticket("bench-round1")
        round1.request("bench-round1", t, [part for pair in event_for(t).to_fields().items() for part in pair])

    def incr() -> None:
        pipe = client.pipeline(transaction=False)
        pipe.incr("{t:bench}:incr")
        pipe.execute()

    peers: dict[str, Callable[[], None]] = {"today": today, "round1": previous, "incr": incr}
    tallies = interleave(client, peers, seconds, rounds=8, timed=("evalsha", "incr"))
    for name in ("bench-round1", "bench"):
        client.delete(usage_stream(name), tenant_key(name, "inflight"), month_key(name, month))
    rate = {name: tally.rate for name, tally in tallies.items()}
    return {"rate": rate, "server_us": {n: tally.us_per_call for n, tally in tallies.items()},
            "vs_round1": rate["today"] / rate["round1"], "vs_incr": rate["today"] / rate["incr"]}


class RoundTripCounter:
    """Counts commands sent on a client's connections (a pipeline or script call is one)."""

    def __init__(self, client: redis.Redis) -> None:
        self.count = 0
        pool = client.connection_pool
        original = pool.get_connection

        def get_connection(*args, **kwargs):  # type: ignore[no-untyped-def]
            connection = original(*args, **kwargs)
            if not getattr(connection, "_counted", False):
                send = connection.send_packed_command

                def counted(command, check_health=True):  # type: ignore[no-untyped-def]
                    self.count += 1
                    return send(command, check_health)

                connection.send_packed_command = counted
                connection._counted = True
            return connection

        pool.get_connection = get_connection


# -- 3. overhead and its stages ----------------------------------------------------------------

class Stages:
    """Wall time per request spent inside named calls (wrapped in place on the handler's own
    objects); what is left of the handler's time is Powertools, routing and the decorators."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.samples: dict[str, list[float]] = defaultdict(list)

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[stage] += (time.perf_counter() - start) * 1000

        setattr(owner, attribute, timed)

    def commit(self, total_ms: float) -> None:
        for stage, ms in self.current.items():
            self.samples[stage].append(ms)
        self.samples["(rest: routing, logs, metrics, headers)"].append(total_ms - sum(self.current.values()))
        self.current.clear()


def load_handler_module() -> Any:
    spec = importlib.util.spec_from_file_location("invoke_app", ROOT / "functions" / "invoke" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_overhead(module: Any, key: str, tenant_id: str, iterations: int, profile: str | None = None) -> dict:
    from gateway.http import embeddings_route

    handler, resolver_path, c = module.handler, module._resolve, module.container
    spec = read_functions(load_template(), ROOT)["InvokeFunction"]
    template = json.loads((ROOT / "events" / "invoke" / "embeddings.json").read_text())
    template["body"] = json.dumps({"model": MODEL, "input": TEXT})
    template["headers"]["Authorization"] = f"Bearer {key}"
    template["multiValueHeaders"]["Authorization"] = [f"Bearer {key}"]
    ids = c.embeddings.tokenizers[MODEL].encode_texts([TEXT], truncate=False)
    inference = c.inference

    def timed_call(call: Callable[[dict, Any], dict]) -> float:
        event = copy.deepcopy(template)
        event["requestContext"]["requestId"] = uuid.uuid4().hex
        context = LambdaContext(spec)
        start = time.perf_counter()
        result = call(event, context)
        assert result["statusCode"] == 200, result["body"][:300]
        return (time.perf_counter() - start) * 1000

    def via_handler() -> float:
        return timed_call(handler)

    def via_resolver() -> float:
        return timed_call(resolver_path)

    def via_direct() -> float:
        start = time.perf_counter()
        inference.embed(ids, tenant_id=tenant_id, timeout_s=10.0)
        return (time.perf_counter() - start) * 1000

    # The handler prints its EMF metrics to stdout, as in Lambda; keep them out of the report.
    report, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
    try:
        for _ in range(30):  # warm every path (scripts loaded, caches filled, connections open)
            via_handler(), via_resolver(), via_direct()
        counter = RoundTripCounter(c.redis)
        via_handler()
        round_trips = counter.count
        paired: dict[str, dict[str, list[float]]] = {}
        for fsync in ("always", "no"):  # as the local stack (and MemoryDB's log) / as a cache
            c.redis.config_set("appendfsync", fsync)
            handler_ms, resolver_ms, direct_ms = [], [], []
            for _ in range(iterations):
                handler_ms.append(via_handler())
                resolver_ms.append(via_resolver())
                direct_ms.append(via_direct())
            paired[fsync] = {"handler": handler_ms, "resolver": resolver_ms, "direct": direct_ms}

        stages = Stages()
        service = c.embeddings
        stages.wrap(c.authenticator, "authenticate", "authenticate (key cache)")
        stages.wrap(embeddings_route, "parse_body", "parse the body (JSON, pydantic)")
        stages.wrap(service, "tokenize", "tokenize")
        stages.wrap(service.limiter, "admit", "admit (Redis round trip 1)")
        stages.wrap(service.inference, "embed", "inference hop")
        stages.wrap(service.limiter, "settle", "settle (Redis round trip 2)")
        stages.wrap(embeddings_route, "render_embeddings", "render the answer")
        stages.wrap(embeddings_route, "json_answer", "serialise the answer")
        # What the Logger and Metrics decorators did, by hand on the thin path.
        stages.wrap(module, "begin_invocation", "log keys: correlation id, context")
        stages.wrap(module, "publish_metrics", "metrics: one EMF line")
        for _ in range(iterations):
            stages.commit(via_handler())
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(lambda: [via_handler() for _ in range(iterations)])
            with open(profile, "w") as out:  # where the time is spent, then what spends it
                stats = pstats.Stats(profiler, stream=out).strip_dirs()
                stats.sort_stats("cumulative").print_stats(45)
                stats.sort_stats("tottime").print_stats(30)
    finally:
        sys.stdout.close()
        sys.stdout = report
    return {
        "round_trips": round_trips,
        "paired": {fsync: {f"{path}_{name}": pct(samples, q) for path, samples in pair.items()
                           for name, q in (("p50", 0.5), ("p99", 0.99))} for fsync, pair in paired.items()},
        "stages": {name: (statistics.median(v), statistics.fmean(v)) for name, v in stages.samples.items()},
    }


# -- 4. cold start -----------------------------------------------------------------------------

def bench_cold_start(runs: int) -> dict:
    def timed(code: str) -> float:
        start = time.perf_counter()
        # This tree's gateway/, not the editable install's (whichever tree that points at).
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "functions" / "invoke",
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        return time.perf_counter() - start

    handler, boto = [], []
    for _ in range(runs):
        handler.append(timed("import app"))
        boto.append(timed("import boto3"))
    return {"handler_s": statistics.median(handler), "boto3_s": statistics.median(boto),
            "ratio": statistics.median(handler) / statistics.median(boto)}


# -- what it costs -----------------------------------------------------------------------------

def lambda_cost(added_ms: float) -> tuple[float, Decimal]:
    """Billed Lambda ms per 1 M requests for ``added_ms`` of the gateway's own work a request
    (the function waits for the hop too, but that is the model's time), and its dollars at
    MEMORY_MB on arm64."""
    billed_ms = added_ms * 1_000_000
    gb_s = Decimal(str(billed_ms)) / 1000 * MEMORY_MB / 1024
    return billed_ms, (gb_s * ARM64_USD_PER_GB_S).quantize(Decimal("0.01"))


def cost_lines(overhead: dict, admission: dict) -> list[str]:
    """Today's own work (the medians: handler - hop), the resolver route's, and round 1's:
    today's path with round 1's admit + settle (the scripts' measured pair time, client wall
    time in the same run, swapped for today's)."""
    m = overhead["paired"]["no"]
    today = m["handler_p50"] - m["direct_p50"]
    resolver = m["resolver_p50"] - m["direct_p50"]
    pair_ms = {name: 1000 / rate for name, rate in admission["rate"].items()}
    round1 = today - pair_ms["today"] + pair_ms["round1"]
    lines = [f"Lambda cost of the gateway's own work (p50 medians, appendfsync no), {MEMORY_MB} MB (1 vCPU), "
             f"arm64 ${ARM64_USD_PER_GB_S}/GB-s:"]
    for name, added in (("today (thin route, today's scripts)", today),
                        ("the resolver route (before issue 22)", resolver),
                        ("round 1 (today's path, round 1's scripts)", round1)):
        billed_ms, usd = lambda_cost(added)
        lines.append(f"  {name:44s} {added:6.3f} ms/request   {billed_ms / 1e6:7.3f} M billed ms per 1 M requests"
                     f"   ${usd} per 1 M")
    lines.append(f"  today vs round 1: {today / round1:.2f}x")
    return lines


# -- the run -----------------------------------------------------------------------------------

def money_tenant(stack: LocalStack, admin: Any) -> tuple[str, str, str]:
    """A tenant on the graduated bench plan, prepaid with a large grant, a soft budget with
    thresholds, and a key with limits of its own: (tenant id, key id, key)."""
    admin.accounts.put_plan(BENCH_PLAN, 1)
    api = urllib3.PoolManager()
    headers = {"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict) -> dict:
        response = api.request(method, f"{stack.api_url}{path}", headers=headers, body=json.dumps(body))
        assert response.status in (200, 201), (path, response.status, response.data[:300])
        return json.loads(response.data)

    tenant = call("POST", "/billing/tenants", {"name": "bench", "plan": BENCH_PLAN.name})
    call("PATCH", f"/billing/tenants/{tenant['id']}", {
        "billing": {"mode": "prepaid", "low_balance_alert": "1.00"},
        "budget": {"monthly_amount": "1000000.00", "hard": False, "alert_thresholds": [0.5, 0.8, 1.0]}})
    call("POST", f"/billing/tenants/{tenant['id']}/credits", {"amount": "1000000.00", "note": "bench"})
    key = call("POST", f"/billing/tenants/{tenant['id']}/keys", {
        "limits": {"requests_per_minute": 10**6, "tokens_per_minute": 10**8},
        "budget": {"monthly_amount": "100000.00", "hard": True, "alert_thresholds": [0.9]}})
    return tenant["id"], key["id"], key["key"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0, help="admission benchmark duration")
    parser.add_argument("--iterations", type=int, default=1000, help="overhead samples per path")
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--profile", help="write cProfile's view of the handler (cumulative) to this file")
    args = parser.parse_args(argv)

    print(f"[bench] load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as state:
        config = StackConfig(api_port=free_port(), inference_port=free_port(), redis_port=free_port(),
                             dynamodb_port=free_port(), files_port=free_port(), state_dir=Path(state), api_workers=1)
        print("[bench] starting the local stack", flush=True)
        stack = LocalStack(config).start(progress=lambda line: print(f"[bench] {line}", flush=True))
        try:
            # This process is the invoke function: the environment the stack gives its handlers.
            os.environ.update({k: v for k, v in stack.handler_env().items() if k != "MAAS_LAMBDA_LOG"})
            module = load_handler_module()
            tenant_id, key_id, key = money_tenant(stack, module.container)
            print("[bench] gateway overhead (handler vs the inference hop alone), interleaved", flush=True)
            overhead = bench_overhead(module, key, tenant_id, args.iterations, args.profile)
            print("[bench] admission (appendfsync no): today's scripts vs round 1's vs pipelined INCR", flush=True)
            admission = bench_admission(module.container, tenant_id, key_id, args.seconds)
        finally:
            stack.stop()
    print("[bench] cold start (import the invoke handler vs import boto3)", flush=True)
    cold = bench_cold_start(args.cold_runs)

    rate, server = admission["rate"], admission["server_us"]
    print()
    print(f"admission (admit + settle)/s  today {rate['today']:8.0f}   round 1 {rate['round1']:8.0f}"
          f"   ratio {admission['vs_round1']:.2f}  (round 1: no money, no key limits)")
    print(f"  server us per script call   today {server['today']:8.1f}   round 1 {server['round1']:8.1f}")
    print(f"  vs pipelined INCR/s {rate['incr']:8.0f}   ratio {admission['vs_incr']:.2f}")
    print(f"redis round trips/request {overhead['round_trips']:9d}   (goal exactly 2)")
    for fsync, m in overhead["paired"].items():
        print(f"Redis appendfsync {fsync}:")
        for q, goal in (("p50", 1.0), ("p99", 2.0)):
            print(f"  handler {q} {m[f'handler_{q}']:7.2f} ms   hop alone {q} {m[f'direct_{q}']:7.2f} ms"
                  f"   added {m[f'handler_{q}'] - m[f'direct_{q}']:6.2f} ms  (goal <= {goal})"
                  f"   resolver route added {m[f'resolver_{q}'] - m[f'direct_{q}']:6.2f} ms")
    print("where the handler's time goes, appendfsync no (ms per request: median, mean)")
    for stage, (median, mean) in overhead["stages"].items():
        print(f"  {stage:52s} {median:7.3f} {mean:7.3f}")
    print(f"cold import {cold['handler_s'] * 1000:7.0f} ms   import boto3 {cold['boto3_s'] * 1000:7.0f} ms"
          f"   ratio {cold['ratio']:.2f}  (goal <= 1.3)")
    for line in cost_lines(overhead, admission):
        print(line)
    print(f"[bench] load average {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
