"""Two models in one container, measured (issue 24; docs/BENCHMARKS.md):

1. A MiniLM tenant's small requests (3 tokens), p50 and p99 alone, then while an MPNet tenant
   sends its large batches back to back (two connections), then, as the peer in the same
   run, while a MiniLM tenant sends MiniLM's largest requests (2,048 x 71 tokens, the
   fairness benchmark's case): each model has its own session and batcher, so MiniLM's queue
   never holds MPNet work; on a CPU the two still share the cores (MPNet's bulk lane runs
   niced, MiniLM's small requests on their express lane).
2. Throughput per model: requests of 64 inputs x 128 tokens, one after another, for
   ``--seconds`` each: tokens/s and requests/s of each model, alone.

    python -m tests.performance.bench_models [--samples 200] [--seconds 10] [--mpnet-items 64]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import wire  # noqa: E402
from inference_image import catalog  # noqa: E402
from inference_image.bench.common import pct  # noqa: E402
from inference_image.tests.conftest import ServerProc, start_server, stop_server  # noqa: E402

MINILM, MPNET = "all-MiniLM-L6-v2", "all-mpnet-base-v2"
DIMS = {MINILM: 384, MPNET: 768}
FRAME = {MINILM: (101, 102), MPNET: (0, 2)}  # each tokenizer's start and end tokens


def ids(model: str, items: int, tokens: int) -> list[list[int]]:
    start, end = FRAME[model]
    return [[start] + [2000 + (i + k) % 900 for k in range(tokens - 2)] + [end] for i in range(items)]


class Client:
    """One keep-alive connection speaking the hop format, for one model."""

    def __init__(self, server: ServerProc, tenant: str, model: str) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.model = model
        self.headers = {"Content-Type": wire.TOKEN_IDS_TYPE, "Accept": wire.EMBEDDINGS_TYPE,
                        wire.ATTRIBUTES_HEADER: wire.format_attributes(tenant, 600_000, model)}

    def embed(self, body: bytes, count: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        self.conn.request("POST", "/invocations", body, self.headers)
        response = self.conn.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - t0
        if response.status == 200:
            assert wire.read_embeddings(answer)[:2] == (count, DIMS[self.model])
        return response.status, elapsed


def latencies(client: Client, n: int) -> list[float]:
    body, out = wire.encode_token_ids(ids(MINILM, 1, 3)), []
    for _ in range(n):
        status, elapsed = client.embed(body, 1)
        assert status == 200, status
        out.append(elapsed)
    return out


def beside(server: ServerProc, samples: int, model: str, heavy: list[list[int]]) -> dict[str, Any]:
    """B's small MiniLM latencies while two connections send ``heavy`` to ``model``."""
    stop, done = threading.Event(), []
    body = wire.encode_token_ids(heavy)

    def flood() -> None:
        a = Client(server, "ten_a", model)
        while not stop.is_set():
            done.append(a.embed(body, len(heavy))[0])

    threads = [threading.Thread(target=flood) for _ in range(2)]
    started = server.metric("maas_inference_batch_requests_count")
    for t in threads:
        t.start()
    while server.metric("maas_inference_batch_requests_count") < started + 1:  # A's work is computing
        time.sleep(0.02)
    b = latencies(Client(server, "ten_b", MINILM), samples)
    stop.set()
    for t in threads:
        t.join(900)
    return {"latencies": b, "heavy_answers": len(done), "heavy_statuses": sorted(set(done))}


def throughput(server: ServerProc, model: str, seconds: float) -> dict[str, float]:
    batch = ids(model, 64, 128)
    body, client = wire.encode_token_ids(batch), Client(server, "ten_t", model)
    client.embed(body, 64)  # warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        status = client.embed(body, 64)[0]
        assert status == 200, f"{model}: {status}"
        n += 1
    elapsed = time.perf_counter() - t0
    return {"requests_per_s": round(n / elapsed, 2), "tokens_per_s": round(n * 64 * 128 / elapsed)}


def ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 50) * 1000, 1), "p99": round(pct(values, 99) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mpnet-items", type=int, default=64, help="inputs of 384 tokens per MPNet request")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for this run (e.g. MAAS_BULK_NICE=19)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    models = catalog.load()
    report: dict[str, Any] = {"load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()), "env": extra}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(models[0].artifact(first=True), Path(tmp) / "server.log", wait_ready=False,
                              MAAS_MODELS=",".join(m.id for m in models),
                              MAAS_REQUEST_TIMEOUT_MS="600000", **extra)  # MPNet on a CPU takes seconds
        try:
            deadline = time.monotonic() + 600  # four sessions to load and check on a shared CPU
            while server.get("/ping")[0] != 200:
                assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
                time.sleep(0.5)
            b = Client(server, "ten_b", MINILM)
            latencies(b, 10)  # warm
            alone = latencies(b, args.samples)
            mpnet = beside(server, args.samples, MPNET, ids(MPNET, args.mpnet_items, 384))
            peer = beside(server, args.samples, MINILM, ids(MINILM, 2048, 71))
            report["minilm_small"] = {
                "alone": ms(alone), "beside_mpnet": ms(mpnet["latencies"]),
                "beside_minilm_largest": ms(peer["latencies"]),
                "p99_ratio_beside_mpnet": round(pct(mpnet["latencies"], 99) / pct(alone, 99), 2),
                "p99_ratio_beside_minilm_largest": round(pct(peer["latencies"], 99) / pct(alone, 99), 2),
                "mpnet_answers": mpnet["heavy_answers"], "minilm_largest_answers": peer["heavy_answers"]}
            report["throughput"] = {m.id: throughput(server, m.id, args.seconds) for m in models}
        finally:
            stop_server(server)
    report["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    s = report["minilm_small"]
    print(f"MiniLM tenant, 3-token requests, {args.samples} per window (load {report['load_before']} -> "
          f"{report['load_after']}; {extra or 'default settings'}):")
    for name in ("alone", "beside_mpnet", "beside_minilm_largest"):
        print(f"   {name:24s} p50 {s[name]['p50']:8.1f} ms   p99 {s[name]['p99']:8.1f} ms")
    print(f"   p99 beside MPNet ({args.mpnet_items} x 384 tokens, {s['mpnet_answers']} answers): "
          f"{s['p99_ratio_beside_mpnet']}x alone; beside MiniLM's largest (peer): "
          f"{s['p99_ratio_beside_minilm_largest']}x")
    for model, t in report["throughput"].items():
        print(f"throughput {model:20s} {t['tokens_per_s']:>8} tokens/s  {t['requests_per_s']} req/s (64 x 128 tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
