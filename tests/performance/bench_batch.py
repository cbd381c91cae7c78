"""Online latency with and without a running batch (`make bench-batch`, issue 26): the local
stack on free ports (a minute to start), one tenant's small online requests measured alone,
then again while another tenant's batch of MPNet lines runs, side by side, interleaved in
rounds (alone, beside a batch, alone, ...) so that the machine's drift hits both alike. The
goal: online p99 beside a batch ≤ 1.2× alone (the container serves batch lines only while no
online request waits; inference_image/server/batcher.py).

Timings are noisy on a shared machine: the load average is printed beside them.
``--samples`` per round and case (100 by default), ``--rounds`` (3).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.services import free_port  # noqa: E402
from infra.local.stack import LocalStack, StackConfig  # noqa: E402

TEXT = "how fast is an online request while a batch runs?"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tenant(api: str, admin: dict[str, str], plan: str = "pro") -> str:
    created = requests.post(f"{api}/billing/tenants", json={"name": "bench", "plan": plan}, headers=admin, timeout=30)
    key = requests.post(f"{api}/billing/tenants/{created.json()['id']}/keys", json={"name": "b"}, headers=admin,
                        timeout=30)
    return str(key.json()["key"])


def online(api: str, key: str, samples: int) -> list[float]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = session.post(f"{api}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXT}, timeout=60)
        latencies.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return latencies


def start_batch(api: str, key: str, lines: int) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    body = "".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/embeddings",
                               "body": {"model": "all-mpnet-base-v2", "input": f"document {i} " + "text " * 60}}) + "\n"
                   for i in range(lines))
    uploaded = requests.post(f"{api}/v1/files", headers=headers, data={"purpose": "batch"},
                             files={"file": ("b.jsonl", io.BytesIO(body.encode()))}, timeout=60)
    assert uploaded.status_code == 200, uploaded.text
    batch = requests.post(f"{api}/v1/batches", headers=headers, timeout=60, json={
        "input_file_id": uploaded.json()["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"})
    assert batch.status_code == 200, batch.text
    return str(batch.json()["id"])


def batch_status(api: str, key: str, batch_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{api}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {key}"},
                             timeout=30).json())


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=5000, help="the batch's MPNet lines (it must outlast the rounds)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as state:
        config = StackConfig(api_port=free_port(), inference_port=free_port(), redis_port=free_port(),
                             dynamodb_port=free_port(), files_port=free_port(), state_dir=Path(state), api_workers=2)
        stack = LocalStack(config).start(progress=lambda line: print(f"[bench] {line}", flush=True))
        try:
            api, admin = stack.api_url, {"Authorization": f"Bearer {stack.admin_key}"}
            online_key, batch_key = tenant(api, admin), tenant(api, admin)
            online(api, online_key, 20)  # warm
            alone: list[float] = []
            beside: list[float] = []
            batch_id = None
            for round_ in range(args.rounds):
                alone += online(api, online_key, args.samples)
                if batch_id is None or batch_status(api, batch_key, batch_id)["status"] != "in_progress":
                    batch_id = start_batch(api, batch_key, args.lines)
                    time.sleep(2)  # the worker picks it up within its pass interval
                before = batch_status(api, batch_key, batch_id)["request_counts"]["completed"]
                beside += online(api, online_key, args.samples)
                after = batch_status(api, batch_key, batch_id)
                assert after["status"] == "in_progress", "the batch ended during the round: give it more --lines"
                print(f"[bench] round {round_ + 1}: the batch answered {after['request_counts']['completed'] - before} "
                      f"lines meanwhile; load {load()}", flush=True)
            requests.post(f"{api}/v1/batches/{batch_id}/cancel", headers={"Authorization": f"Bearer {batch_key}"},
                          timeout=30)
        finally:
            stack.stop()
    report = {case: {"p50_ms": round(statistics.median(s) * 1000, 2), "p99_ms": round(percentile(s, 0.99) * 1000, 2)}
              for case, s in (("alone", alone), ("beside_a_batch", beside))}
    report["p99_ratio"] = round(report["beside_a_batch"]["p99_ms"] / report["alone"]["p99_ms"], 2)  # type: ignore[index]
    report["p50_ratio"] = round(report["beside_a_batch"]["p50_ms"] / report["alone"]["p50_ms"], 2)  # type: ignore[index]
    report["load_after"] = load()  # type: ignore[assignment]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
