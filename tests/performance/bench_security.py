"""The review's timings, measured (`make bench-security`): what the e2e tests no longer time
(issue 23). The local stack on free ports (a minute to start), then, side by side:

1. no key-existence oracle: a real key id with a wrong secret against an id that never
   existed, interleaved, median and p90 of each (the review found 47.9 against 43.9 ms: one
   DynamoDB read per forged id; the test now counts the reads, tests/unit/test_no_key_oracle.py);
2. a flood of 1.5 MB bodies from a tenant at its rate limit: another tenant's median alone
   and flooded (before the fix 0.05 s went to 2-4 s).

Timings are noisy on a shared machine: the load average is printed beside them.
``--samples`` per case (200 by default; 20 for a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.services import free_port  # noqa: E402
from infra.local.stack import LocalStack, StackConfig  # noqa: E402
from tests.e2e.test_security import forge  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
HUGE_TEXT = "lorem ipsum dolor sit amet " * 75_000


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_post(session: requests.Session, url: str, key: str, **kw: Any) -> tuple[int, float]:
    started = time.perf_counter()
    response = session.post(url, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw)
    return response.status_code, time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": round(statistics.median(s) * 1000, 2), "p90_ms": round(s[int(0.9 * (len(s) - 1))] * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"load_before": load()}
    with tempfile.TemporaryDirectory() as state:
        config = StackConfig(api_port=free_port(), inference_port=free_port(), redis_port=free_port(),
                             dynamodb_port=free_port(), files_port=free_port(), state_dir=Path(state), api_workers=1)
        stack = LocalStack(config).start(progress=lambda line: print(f"[bench] {line}", flush=True))
        try:
            s = requests.Session()
            admin = {"Authorization": f"Bearer {stack.admin_key}"}

            def tenant(limits: dict | None = None) -> dict:
                t = s.post(f"{stack.api_url}/billing/tenants", json={"name": "bench", "plan": "pro"},
                           headers=admin).json()
                if limits:
                    s.patch(f"{stack.api_url}/billing/tenants/{t['id']}", json={"limits": limits}, headers=admin)
                return s.post(f"{stack.api_url}/billing/tenants/{t['id']}/keys", json={}, headers=admin).json()

            url = f"{stack.api_url}/v1/embeddings"
            body = {"model": MODEL, "input": "probe"}
            key = tenant()
            assert timed_post(s, url, key["key"], json=body)[0] == 200
            cases = {"known id, wrong secret": forge(key["id"], "A" * 32),
                     "unknown id": forge("key_" + "Q" * 16, "A" * 32)}
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.samples):
                for name, credential in cases.items():
                    status, seconds = timed_post(s, url, credential, json=body)
                    assert status == 401, status
                    times[name].append(seconds)
            report["oracle"] = {name: summary(v) for name, v in times.items()}

            flooder, victim = tenant({"requests_per_minute": 1}), tenant()
            timed_post(s, url, flooder["key"], json=body)
            huge = json.dumps({"model": MODEL, "input": [HUGE_TEXT[:100_000]] * 15})

            def victim_times() -> list[float]:
                return [timed_post(s, url, victim["key"], json={"model": MODEL, "input": "a short sentence"})[1]
                        for _ in range(args.samples)]

            alone = victim_times()
            stop, statuses = threading.Event(), []

            def flood() -> None:
                fs = requests.Session()
                while not stop.is_set():
                    statuses.append(timed_post(fs, url, flooder["key"], data=huge,
                                               )[0])

            threads = [threading.Thread(target=flood) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.5)
                flooded = victim_times()
            finally:
                stop.set()
                for t in threads:
                    t.join(120)
            report["flood"] = {"alone": summary(alone), "flooded": summary(flooded),
                               "flood_statuses": sorted(set(statuses)), "flood_requests": len(statuses)}
        finally:
            stack.stop()
    report["load_after"] = load()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    o, f = report["oracle"], report["flood"]
    print(f"security timings, {args.samples} samples each (load {report['load_before']} -> {report['load_after']}):")
    print(f"  {'':28s} {'median ms':>10s} {'p90 ms':>8s}")
    for name, v in [*o.items(), ("victim alone", f["alone"]), ("victim under the flood", f["flooded"])]:
        print(f"  {name:28s} {v['median_ms']:10.2f} {v['p90_ms']:8.2f}")
    known, unknown = (o[n]["median_ms"] for n in cases)
    print(f"  unknown/known median: {unknown / known:.2f}x; flooded/alone median: "
          f"{f['flooded']['median_ms'] / f['alone']['median_ms']:.2f}x "
          f"({f['flood_requests']} flood requests, statuses {f['flood_statuses']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
