"""Shared bench helpers: texts, model paths, an HTTP/1.1 keep-alive load generator."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from inference_image import default_model_dir

REPO = Path(__file__).resolve().parents[2]

_SUBJECTS = ("The model", "A tenant", "Our service", "The cat", "This invoice", "The GPU",
             "A small team", "The river", "My neighbour", "The new policy")
_VERBS = ("embeds", "bills", "scales", "ignores", "explains", "measures", "crosses",
          "rejects", "summarises", "rebuilds")
_OBJECTS = ("every request", "the monthly report", "a long document about climate",
            "three sentences", "the quarterly revenue numbers", "its own tokenizer",
            "the mountain path at night", "an unexpected error", "a batch of questions",
            "the old database schema")
_TAILS = ("", " quickly", " before noon.", " with great care and attention to detail.",
          ", which surprised everyone in the office on Monday morning.", "!", "?",
          " in 2026.", " — and then it rained.", " for the third time this week, again.")


def sentences(n: int, seed: int = 7) -> list[str]:
    """n single sentences, ~6-30 tokens each, deterministic."""
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            f"{rng.choice(_TAILS)}" for _ in range(n)]


def model_dir() -> Path:
    path = Path(default_model_dir())
    return path if path.is_absolute() else (REPO / path if not path.exists() else path)


def ensure_model() -> Path:
    from inference_image.export import export

    out = model_dir().resolve()
    export(out)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def line(self, name: str) -> str:
        lat = self.latencies
        return (f"{name:<22} c={self.concurrency:<4} {self.rps:8.1f} req/s  "
                f"p50 {pct(lat, 50) * 1000:7.1f} ms  p99 {pct(lat, 99) * 1000:7.1f} ms  "
                f"n={len(lat)} errors={self.errors}")


async def _one_connection(host: str, port: int, path: str, bodies: list[bytes],
                          stop_at: float, result: LoadResult, offset: int,
                          headers: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += 1
            head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            elapsed = time.perf_counter() - t0
            if b" 200 " in status_line:
                result.latencies.append(elapsed)
            else:
                result.errors += 1
    finally:
        writer.close()


async def _load(url: str, path: str, bodies: list[bytes], concurrency: int,
                seconds: float, warmup: float, headers: dict[str, str]) -> LoadResult:
    host, port = url.removeprefix("http://").split(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if warmup:
        scratch = LoadResult(concurrency, warmup)
        stop = time.perf_counter() + warmup
        await asyncio.gather(*(_one_connection(host, int(port), path, bodies, stop, scratch, k,
                                               extra) for k in range(concurrency)))
    result = LoadResult(concurrency, seconds)
    stop = time.perf_counter() + seconds
    await asyncio.gather(*(_one_connection(host, int(port), path, bodies, stop, result, k * 7,
                                           extra) for k in range(concurrency)))
    return result


def run_load(url: str, path: str, bodies: list[bytes], concurrency: int, seconds: float,
             warmup: float = 1.0, headers: dict[str, str] | None = None) -> LoadResult:
    """Closed loop: ``concurrency`` keep-alive connections, each sending back to back."""
    return asyncio.run(_load(url, path, bodies, concurrency, seconds, warmup,
                             headers or {"Content-Type": "application/json"}))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def embeddings_bodies(texts: list[str]) -> list[bytes]:
    return [json.dumps({"model": "all-MiniLM-L6-v2", "input": t}).encode() for t in texts]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
