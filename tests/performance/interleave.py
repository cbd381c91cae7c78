"""Peers run side by side: each in turn for a short slice, so drift on a shared machine hits
all alike; INFO commandstats reset around every slice gives each peer's server time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Tally:
    """One peer's sums over every slice it ran."""

    count: int = 0
    seconds: float = 0.0
    server_us: float = 0.0
    server_calls: int = 0
    writes: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def us_per_call(self) -> float:
        return self.server_us / max(1, self.server_calls)


def interleave(client: Any, peers: dict[str, Callable[[], None]], seconds: float, *, rounds: int,
               timed: Iterable[str] = ("evalsha",), writes: frozenset[str] = frozenset(),
               before_slice: Callable[[], Any] = lambda: None) -> dict[str, Tally]:
    """Run each peer ``rounds`` times for ``seconds / rounds / len(peers)``; ``timed`` names the
    commands whose server time counts (``evalsha``, ``incr``), ``writes`` the write commands
    counted per peer."""
    timed = tuple(f"cmdstat_{name}" for name in timed)
    tallies = {name: Tally() for name in peers}
    for _ in range(rounds):
        for name, call in peers.items():
            before_slice()
            tally = tallies[name]
            client.config_resetstat()
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / rounds / len(peers):
                call()
                tally.count += 1
            tally.seconds += time.perf_counter() - start
            stats = client.info("commandstats")
            for command in timed:
                if command in stats:
                    tally.server_us += stats[command]["usec"]
                    tally.server_calls += stats[command]["calls"]
            tally.writes += sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_") in writes)
    return tallies
