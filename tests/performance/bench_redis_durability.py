"""What MemoryDB-grade durability costs the local Redis: admission throughput and latency with
`appendfsync always` (the local stack's Redis: an acknowledged write survives kill -9) against
the same redis-server without an append-only file, in the same run, interleaved.

The workload is the hot path's own Redis work: per request one admission (admit.lua) and one
settlement that charges it (settle.lua, which appends the usage event to the tenant's stream),
from several client processes at once over several tenants. Redis fsyncs once per event-loop
pass, whatever the number of writes in it, so the cost depends on how many clients write at
once: both 1 and N clients are measured.

    .venv/bin/python -m tests.performance.bench_redis_durability [--seconds 3] [--clients 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.domain.plans import Limits  # noqa: E402
from infra.local.services import free_port, redis_service  # noqa: E402

TENANTS = 16
MONTH = "2026-11"
LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**9, monthly_tokens=10**15,
                max_concurrent_requests=10**6)


def seed(port: int) -> None:
    from datetime import UTC, datetime

    import redis

    from gateway.adapters.redis_store import RedisLimiter
    from gateway.domain.admission import TenantState
    from gateway.services.seeding import month_bounds

    limiter = RedisLimiter(redis.Redis(port=port))
    _, _, start_ms, end_ms = month_bounds(datetime(2026, 11, 15, tzinfo=UTC))
    for i in range(TENANTS):
        limiter.seed(TenantState.empty(f"bench{i}", MONTH), month_start_ms=start_ms, month_end_ms=end_ms)


def worker(port: int, seconds: float, number: int, results: multiprocessing.Queue) -> None:
    """Admit + settle (charge) in a loop for `seconds`; puts (requests, latencies in ms)."""
    import redis

    from gateway.adapters.redis_store import RedisLimiter
    from gateway.domain.admission import Ticket, Verdict
    from gateway.domain.usage import UsageEvent

    limiter = RedisLimiter(redis.Redis(port=port))
    tenant = f"bench{number % TENANTS}"
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        ticket = Ticket(tenant_id=tenant, key_id="k", key_expires_ms=0, limits=LIMITS, tokens=12,
                        request_id=uuid.uuid4().hex, month=MONTH)
        decision = limiter.admit(ticket)
        assert decision.verdict is Verdict.OK, decision.verdict
        event = UsageEvent(request_id=ticket.request_id, tenant_id=tenant, key_id="k", model="m", prompt_tokens=12,
                           timestamp_ms=int(time.time() * 1000))
        limiter.settle(ticket, decision, charge=True, event=event)
        latencies.append((time.perf_counter() - started) * 1000)
    results.put((len(latencies), latencies))


def run(port: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = context.Queue()
    processes = [context.Process(target=worker, args=(port, seconds, i, results)) for i in range(clients)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    return sum(n for n, _ in outcomes) / elapsed, [v for _, values in outcomes for v in values]


def trim(port: int) -> None:
    import redis

    client = redis.Redis(port=port)
    for i in range(TENANTS):  # the streams grow with every charge: keep each round alike
        client.delete(f"{{t:bench{i}}}:usage", f"{{t:bench{i}}}:inflight")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def filesystem(path: Path) -> str:
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True).stdout.splitlines()
    return out[-1].split()[1] if len(out) > 1 else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-durability-", dir=ROOT / ".maas") as tmp:
        root = Path(tmp)
        servers = {
            "fsync always": redis_service(free_port(), root / "durable", root, durable=True).start(),
            "no append-only file": redis_service(free_port(), root / "volatile", root, durable=False).start(),
        }
        try:
            for service in servers.values():
                seed(service.port)
            print(f"load average before: {os.getloadavg()}; {os.cpu_count()} CPUs; files on {filesystem(root)} "
                  f"({root})")
            for clients in (1, args.clients):
                rates: dict[str, list[float]] = {name: [] for name in servers}
                latencies: dict[str, list[float]] = {name: [] for name in servers}
                for _ in range(args.rounds):  # interleaved: drift on a shared machine hits both alike
                    for name, service in servers.items():
                        trim(service.port)
                        rate, values = run(service.port, clients, args.seconds)
                        rates[name].append(rate)
                        latencies[name] += values
                print(f"\n{clients} client process(es), admit + settle (2 round trips) per request:")
                for name in servers:
                    print(f"  {name:<20} {statistics.median(rates[name]):8.0f} requests/s  "
                          f"p50 {pct(latencies[name], 0.5):5.2f} ms  p99 {pct(latencies[name], 0.99):6.2f} ms  "
                          f"(rounds: {', '.join(f'{r:.0f}' for r in rates[name])})")
                durable, volatile = (statistics.median(rates[n]) for n in servers)
                print(f"  fsync always / none: {durable / volatile:.2f}x the throughput")
            print(f"\nload average after: {os.getloadavg()}")
        finally:
            for service in servers.values():
                service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
