"""Gateway benchmarks, each against a peer in the same run (`make bench-gateway`).

1. Admission decisions/s (the Lua script) vs a plain pipelined INCR, same Redis, same client.
2. Redis round trips per tenant request, counted on the client's connections: goal exactly 2.
3. Gateway overhead: the full invoke handler (tokenize, admit, forward, settle) vs a direct
   call to the inference server with the same token ids, interleaved; goal <= 2 ms added at
   p50 and <= 5 ms at p99.
4. Cold start: importing the invoke handler module vs a bare `import boto3`; goal <= 2.0x.
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
from pathlib import Path

import redis
import urllib3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.adapters.redis_store import RedisLimiter  # noqa: E402
from gateway.domain.admission import Ticket  # noqa: E402
from gateway.domain.plans import Limits  # noqa: E402
from infra.local.apigw import LambdaContext, read_functions  # noqa: E402
from infra.local.services import free_port  # noqa: E402
from infra.local.stack import LocalStack, StackConfig  # noqa: E402
from infra.local.template import load_template  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_admission(client: redis.Redis, seconds: float) -> dict:
    limiter = RedisLimiter(client)
    limits = Limits(requests_per_minute=10**9, tokens_per_minute=10**9, monthly_tokens=10**15,
                    max_concurrent_requests=10**6)
    counts = {"admit": 0, "incr": 0}
    elapsed = {"admit": 0.0, "incr": 0.0}
    rounds = 6
    for _ in range(rounds):  # interleaved, so drift on a shared machine hits both alike
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / rounds / 2:
            limiter.admit(Ticket(tenant_id="bench", key_id="k", key_expires_ms=0, limits=limits, cost=12,
                                 request_id=uuid.uuid4().hex, month="2026-11"))
            counts["admit"] += 1
        elapsed["admit"] += time.perf_counter() - start
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / rounds / 2:
            pipe = client.pipeline(transaction=False)
            pipe.incr("{t:bench}:incr")
            pipe.execute()
            counts["incr"] += 1
        elapsed["incr"] += time.perf_counter() - start
    client.delete("{t:bench}:inflight")
    admit_rate, incr_rate = counts["admit"] / elapsed["admit"], counts["incr"] / elapsed["incr"]
    return {"admit_per_s": admit_rate, "incr_per_s": incr_rate, "ratio": admit_rate / incr_rate}


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


def load_handler():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("invoke_app", ROOT / "functions" / "invoke" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def bench_overhead(stack: LocalStack, key: str, iterations: int) -> dict:
    from gateway.wiring import container

    handler = load_handler()
    spec = read_functions(load_template(), ROOT)["InvokeFunction"]
    template = json.loads((ROOT / "events" / "invoke" / "embeddings.json").read_text())
    text = "The quick brown fox jumps over the lazy dog."
    template["body"] = json.dumps({"model": "all-MiniLM-L6-v2", "input": text})
    for headers in (template["headers"], template["multiValueHeaders"]):
        headers["Authorization"] = f"Bearer {key}" if headers is template["headers"] else [f"Bearer {key}"]
    ids = container().embeddings.tokenizers["all-MiniLM-L6-v2"].encode_texts([text], truncate=False)
    direct = urllib3.PoolManager()
    url = f"http://127.0.0.1:{stack.config.inference_port}/invocations"
    payload = json.dumps({"input_ids": ids}).encode()

    def via_handler() -> float:
        event = copy.deepcopy(template)
        event["requestContext"]["requestId"] = uuid.uuid4().hex
        start = time.perf_counter()
        result = handler(event, LambdaContext(spec))
        assert result["statusCode"] == 200, result["body"][:200]
        return (time.perf_counter() - start) * 1000

    def via_direct() -> float:
        start = time.perf_counter()
        response = direct.request("POST", url, body=payload, headers={"Content-Type": "application/json"})
        assert response.status == 200
        return (time.perf_counter() - start) * 1000

    # The handler prints its EMF metrics to stdout, as in Lambda; keep them out of the report.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    for _ in range(20):  # warm both paths (scripts loaded, caches filled, connections open)
        via_handler(), via_direct()
    counter = RoundTripCounter(container().redis)
    via_handler()
    round_trips = counter.count
    handler_ms, direct_ms = [], []
    for _ in range(iterations):
        handler_ms.append(via_handler())
        direct_ms.append(via_direct())
    sys.stdout = sys.__stdout__
    return {
        "round_trips": round_trips,
        "handler_p50": pct(handler_ms, 0.5), "direct_p50": pct(direct_ms, 0.5),
        "handler_p99": pct(handler_ms, 0.99), "direct_p99": pct(direct_ms, 0.99),
    }


def bench_cold_start(runs: int) -> dict:
    def timed(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "functions" / "invoke")
        return time.perf_counter() - start

    handler, boto = [], []
    for _ in range(runs):
        handler.append(timed("import app"))
        boto.append(timed("import boto3"))
    return {"handler_s": statistics.median(handler), "boto3_s": statistics.median(boto),
            "ratio": statistics.median(handler) / statistics.median(boto)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="admission benchmark duration")
    parser.add_argument("--iterations", type=int, default=300, help="overhead samples per path")
    parser.add_argument("--cold-runs", type=int, default=10)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as state:
        config = StackConfig(api_port=free_port(), inference_port=free_port(), redis_port=free_port(),
                             dynamodb_port=free_port(), state_dir=Path(state), api_workers=1)
        print("[bench] starting the local stack", flush=True)
        stack = LocalStack(config).start(progress=lambda line: print(f"[bench] {line}", flush=True))
        try:
            client = stack.redis_client()
            print("[bench] admission vs pipelined INCR", flush=True)
            admission = bench_admission(client, args.seconds)
            api = urllib3.PoolManager()
            headers = {"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "application/json"}
            tenant = json.loads(api.request("POST", f"{stack.api_url}/billing/tenants", headers=headers,
                                            body=json.dumps({"name": "bench", "plan": "pro"})).data)
            key = json.loads(api.request("POST", f"{stack.api_url}/billing/tenants/{tenant['id']}/keys",
                                         headers=headers, body="{}").data)["key"]
            print("[bench] gateway overhead (handler vs direct inference), interleaved", flush=True)
            overhead = bench_overhead(stack, key, args.iterations)
        finally:
            stack.stop()
    print("[bench] cold start (import the invoke handler vs import boto3)", flush=True)
    cold = bench_cold_start(args.cold_runs)

    print()
    print(f"admission decisions/s     {admission['admit_per_s']:9.0f}   pipelined INCR/s {admission['incr_per_s']:9.0f}"
          f"   ratio {admission['ratio']:.2f}  (goal >= 0.70)")
    print(f"redis round trips/request {overhead['round_trips']:9d}   (goal exactly 2)")
    print(f"handler p50 {overhead['handler_p50']:7.2f} ms   direct p50 {overhead['direct_p50']:7.2f} ms"
          f"   added {overhead['handler_p50'] - overhead['direct_p50']:6.2f} ms  (goal <= 2)")
    print(f"handler p99 {overhead['handler_p99']:7.2f} ms   direct p99 {overhead['direct_p99']:7.2f} ms"
          f"   added {overhead['handler_p99'] - overhead['direct_p99']:6.2f} ms  (goal <= 5)")
    print(f"cold import {cold['handler_s'] * 1000:7.0f} ms   import boto3 {cold['boto3_s'] * 1000:7.0f} ms"
          f"   ratio {cold['ratio']:.2f}  (goal <= 2.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
