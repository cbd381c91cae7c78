"""Fairness, measured (`make bench-fairness`): what the tests no longer time (issue 23).

1. The scheduler, step by step (no model, no clock): the tokens each tenant gets in each of
   the bulk lane's slices while tenant A's two largest requests are queued and B (3 tokens,
   then 100 tokens) or C (A's size) arrive. This is the order of service the tests assert.
2. The inference server on the real model, on the CPU: tenant B's small requests, p50 and
   p99 alone and while A sends its largest requests (2,048 x 71 tokens) back to back, side
   by side with their ratio. The tests used to assert loaded p99 < 2 x alone; on a shared
   2-core machine a foreign burst in either window moves it from 1.x to 2-3x, so it is only
   printed here, with the load average beside it.

``--samples`` small requests per window (200 by default; 20 for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import wire  # noqa: E402
from inference_image.bench.common import pct  # noqa: E402
from inference_image.tests.conftest import start_server, stop_server  # noqa: E402
from inference_image.tests.test_fairness import LARGEST, SMALL, Client, _next_slice, _scheduler  # noqa: E402

MEDIUM = [[101] + [2000] * 98 + [102]]  # 100 tokens: the bulk lane's, without the express lane


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def order_of_service(slices: int = 6) -> dict[str, list[dict[str, int]]]:
    async def run(newcomer: list[list[int]], tenant: str, every_slice: bool) -> list[dict[str, int]]:
        batcher = _scheduler()
        for _ in range(2):
            batcher.enqueue(LARGEST, 60, tenant="ten_a")
        out = [_next_slice(batcher)]
        batcher.enqueue(newcomer, 60, tenant=tenant)
        for _ in range(slices - 1):
            out.append(_next_slice(batcher))
            if every_slice:
                batcher.enqueue(newcomer, 60, tenant=tenant)
        return out

    return {"B 3 tokens, one request per slice": asyncio.run(run(SMALL, "ten_b", True)),
            "B 100 tokens, one request": asyncio.run(run(MEDIUM, "ten_b", False)),
            "C 2,048 x 71 tokens": asyncio.run(run(LARGEST, "ten_c", False))}


def latencies(client: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        status, elapsed = client.embed(SMALL)
        assert status == 200, status
        out.append(elapsed)
    return out


def server_fairness(samples: int) -> dict[str, Any]:
    model_dir = Path(os.environ.get("MAAS_MODEL_DIR") or ROOT / ".maas" / "model").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(model_dir, Path(tmp) / "server.log")
        try:
            b = Client(server, "ten_b")
            latencies(b, 10)  # warm
            alone = latencies(b, samples)
            stop, done = threading.Event(), []
            body = wire.encode_token_ids(LARGEST)

            def tenant_a() -> None:
                a = Client(server, "ten_a")
                while not stop.is_set():
                    done.append(a.embed(LARGEST, body)[0])

            threads = [threading.Thread(target=tenant_a) for _ in range(2)]
            rounds = server.metric("maas_inference_batch_requests_count")
            for t in threads:
                t.start()
            while server.metric("maas_inference_batch_requests_count") < rounds + 1:
                threading.Event().wait(0.02)
            loaded = latencies(b, samples)
            stop.set()
            for t in threads:
                t.join(300)
        finally:
            stop_server(server)
    ms = {name: {"p50": round(pct(v, 50) * 1000, 1), "p99": round(pct(v, 99) * 1000, 1)}
          for name, v in (("alone", alone), ("loaded", loaded))}
    return {**ms, "p99_ratio": round(ms["loaded"]["p99"] / ms["alone"]["p99"], 2),
            "p50_ratio": round(ms["loaded"]["p50"] / ms["alone"]["p50"], 2), "a_answers": done}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scheduler-only", action="store_true", help="part 1 only (no model)")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"order_of_service": order_of_service(), "load_before": load()}
    if not args.scheduler_only:
        report["server"] = server_fairness(args.samples)
    report["load_after"] = load()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("1. the bulk lane's slices (16,384 tokens), tokens per tenant, A's two largest requests queued:")
    for case, slices in report["order_of_service"].items():
        print(f"   {case:36s} " + "  ".join(
            "/".join(f"{t.removeprefix('ten_')}{n}" for t, n in s.items()) or "-" for s in slices))
    if "server" in report:
        s = report["server"]
        print(f"2. B's small requests on the inference server, {args.samples} per window "
              f"(load {report['load_before']} -> {report['load_after']}):")
        print(f"   {'':8s} {'p50 ms':>8s} {'p99 ms':>8s}")
        for name in ("alone", "loaded"):
            print(f"   {name:8s} {s[name]['p50']:8.1f} {s[name]['p99']:8.1f}")
        print(f"   loaded/alone: p50 {s['p50_ratio']}x, p99 {s['p99_ratio']}x "
              f"(A's answers meanwhile: {len(s['a_answers'])}, statuses {sorted(set(s['a_answers']))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
