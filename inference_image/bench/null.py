"""The serving path alone: the real server process with its ONNX session replaced by a null
model that answers at once (zeros), so what is measured is HTTP, parsing, scheduling, the
lane hand-offs and the answer, per request.

    python -m inference_image.bench null [--seconds 4] [--concurrency 1,32] [--items 1,32]

For each (format, items per request, concurrency) it prints requests/s and the server
process's CPU time per request (user + system, from /proc), and from that the requests/s
one core could serve. The load generator runs in this process on the same machine, so
requests/s depends on it and on the machine's load; the CPU time per request does not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from gateway import wire
from inference_image import EMBEDDING_DIM
from inference_image.bench.common import REPO, model_dir, process_cpu_s, run_load

FORMATS = {
    "binary": {"Content-Type": wire.TOKEN_IDS_TYPE, "Accept": wire.EMBEDDINGS_TYPE,
               wire.ATTRIBUTES_HEADER: "tenant=ten_bench;timeout_ms=20000"},
    "json": {"Content-Type": "application/json", "Accept": "application/json"},
}


class NullSession:
    """The OnnxSession interface, computing nothing."""

    provider: str | None = None
    tried: dict[str, str] = {}
    reference_cosine: float | None = None

    def initialize(self) -> str:
        self.provider = "NullExecutionProvider"
        return self.provider

    def execute(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.zeros((input_ids.shape[0], EMBEDDING_DIM), dtype=np.float32)

    def open_lane(self):  # noqa: ANN201 - same shape as OnnxSession.open_lane
        return self.execute

    def finalize(self) -> None:
        pass


def _serve_null() -> int:
    from inference_image.server.__main__ import serve
    from inference_image.server.config import Settings

    return serve(Settings.from_env(), session=NullSession())


def _bodies(fmt: str, items: int) -> list[bytes]:
    ids = [[101] + [2000 + (i * 7 + k) % 5000 for k in range(12)] + [102] for i in range(items)]
    if fmt == "binary":
        return [wire.encode_token_ids(ids)]
    return [json.dumps({"input_ids": ids}).encode()]


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    from inference_image.bench.serving import _free_port

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference_image.bench.null", "--serve"], cwd=REPO,
        env={**os.environ, **env, "PORT": str(port), "HOST": "127.0.0.1",
             "MAAS_MODEL_DIR": str(model_dir()), "MAAS_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=1) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the null-model server did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference_image.bench null", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--items", default="1,32")
    p.add_argument("--formats", default="binary,json")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.serve:
        return _serve_null()
    env = dict(kv.split("=", 1) for kv in args.env)
    proc, url = _start(env)
    rows = []
    try:
        print(f"[null] load average {os.getloadavg()[0]:.2f} at the start", flush=True)
        for fmt in args.formats.split(","):
            for items in (int(x) for x in args.items.split(",")):
                bodies = _bodies(fmt, items)
                for c in (int(x) for x in args.concurrency.split(",")):
                    run_load(url, "/invocations", bodies, c, 0.5, 0, FORMATS[fmt])  # warm
                    cpu0 = process_cpu_s(proc.pid)
                    result = run_load(url, "/invocations", bodies, c, args.seconds, 0,
                                      FORMATS[fmt])
                    cpu = process_cpu_s(proc.pid) - cpu0
                    n = len(result.latencies)
                    us = cpu / max(n, 1) * 1e6
                    row = {"format": fmt, "items": items, "concurrency": c, "rps": result.rps,
                           "cpu_us_per_request": us, "rps_per_core": 1e6 / us if us else 0,
                           "errors": result.errors, "load_average": os.getloadavg()[0]}
                    rows.append(row)
                    print(f"[null] {fmt:<6} items={items:<3} c={c:<4} {result.rps:8.0f} req/s  "
                          f"server CPU {us:6.1f} us/request = {row['rps_per_core']:7.0f} req/s "
                          f"per core  errors={result.errors}  load {row['load_average']:.2f}",
                          flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
