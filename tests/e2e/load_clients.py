"""Client processes that keep a steady load on the running stack's tenant API and write down
every answer (one JSON line each), for the fault-injection suite (test_fault_injection.py).

Each client is a process of its own (spawned: nothing shared with the test's process but the
events below) that sends ``POST /v1/embeddings`` for tenants picked at random, one request at
a time, until told to stop. ``pause`` parks every client between two requests (each says so
through its own ``parked`` event), so the test can let the stack drain and then take Redis's
data away with no request in flight."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

MODEL = "all-MiniLM-L6-v2"
# After a 503/504, a client waits this long (a quarter of Retry-After): a well-behaved client
# does not spin on an outage, and a quarter second is still fine enough to time a recovery.
OUTAGE_PAUSE_S = 0.25
WORDS = ("ledger quota credit budget redis flusher inference durable replay crash restart tenant answer "
         "stream outbox projection seed token embedding kill recover").split()


@dataclass(frozen=True)
class Target:
    """A tenant under load: its key, how often it is picked, and its input (None: random text;
    token ids: a fixed cost per request)."""

    name: str
    key: str
    weight: float
    input: Any = None


def _body(target: Target, rng: random.Random, number: int) -> dict[str, Any]:
    if target.input is not None:
        return {"model": MODEL, "input": target.input}
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
    return {"model": MODEL, "input": f"request {number}: {words}"}


def _record(target: Target, response: Any, started: float) -> dict[str, Any]:
    record: dict[str, Any] = {"tenant": target.name, "status": response.status_code, "t0": started,
                              "t1": time.time(), "rid": response.headers.get("x-request-id"),
                              "retry_after": response.headers.get("Retry-After")}
    try:
        body = response.json()
    except ValueError:
        record["body"] = response.text[:200]
        return record
    if response.status_code == 200:
        record["tokens"] = body["usage"]["prompt_tokens"]
        record["cost"] = body["usage"].get("cost")
    elif isinstance(body, dict) and isinstance(body.get("error"), dict):
        record["code"] = body["error"].get("code")
        record["message"] = body["error"].get("message")
    return record


def run_client(url: str, targets: list[Target], out: str, seed: int, stop: Event, pause: Event,
               parked: Event) -> None:
    import requests

    rng = random.Random(seed)
    session = requests.Session()
    weights = [t.weight for t in targets]
    number = 0
    with open(out, "a", encoding="utf-8") as log:
        while not stop.is_set():
            if pause.is_set():
                parked.set()
                while pause.is_set() and not stop.is_set():
                    time.sleep(0.05)
                parked.clear()
                continue
            target = rng.choices(targets, weights)[0]
            number += 1
            started = time.time()
            try:
                response = session.post(f"{url}/v1/embeddings", json=_body(target, rng, number),
                                        headers={"Authorization": f"Bearer {target.key}"}, timeout=60)
                record = _record(target, response, started)
            except Exception as error:  # noqa: BLE001 - no answer at all is what the test must see
                record = {"tenant": target.name, "status": 0, "t0": started, "t1": time.time(),
                          "error": f"{type(error).__name__}: {error}"[:300]}
                session = requests.Session()
            log.write(json.dumps(record) + "\n")
            log.flush()
            if record["status"] in (503, 504):
                time.sleep(OUTAGE_PAUSE_S)


class Load:
    """``clients`` processes over ``targets``; their answers in ``out_dir``/client-N.jsonl."""

    def __init__(self, url: str, targets: list[Target], out_dir: Path, *, clients: int, seed: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        self.pause_event = context.Event()
        self.parked = [context.Event() for _ in range(clients)]
        self.files = [out_dir / f"client-{i}.jsonl" for i in range(clients)]
        self.processes = [
            context.Process(target=run_client, name=f"load-{i}", daemon=True,
                            args=(url, targets, str(self.files[i]), seed * 100 + i, self.stop_event,
                                  self.pause_event, self.parked[i]))
            for i in range(clients)
        ]

    def start(self) -> Load:
        for process in self.processes:
            process.start()
        return self

    def pause(self, within_s: float = 90.0) -> None:
        """Every client parked between two requests (none in flight)."""
        self.pause_event.set()
        deadline = time.monotonic() + within_s
        while not all(event.is_set() or not p.is_alive() for event, p in zip(self.parked, self.processes, strict=True)):
            if time.monotonic() > deadline:
                raise AssertionError("the load clients did not park")
            time.sleep(0.05)

    def resume(self) -> None:
        self.pause_event.clear()

    def stop(self) -> None:
        self.stop_event.set()
        for process in self.processes:
            process.join(90)
            if process.is_alive():
                process.kill()
                process.join()

    def records(self) -> list[dict[str, Any]]:
        found = []
        for path in self.files:
            if path.exists():
                found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return sorted(found, key=lambda r: r["t0"])
