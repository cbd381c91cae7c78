"""Stale consumers of the usage streams' consumer group.

Every flusher instance reads as a consumer of its own name (one per Lambda execution
environment), and Redis keeps a consumer in its group until it is deleted: without pruning,
each group collects one entry per environment that ever ran. A consumer is deleted only when
it holds no pending entries and has been idle for ``min_idle_ms`` (a flusher running every
minute that has said nothing for that long is gone); the check and the delete run in one
script, so nothing pending is ever dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.adapters.lua_scripts import PRUNE_CONSUMERS

DEFAULT_MIN_IDLE_MS = 3_600_000  # an hour: 60 runs of a flusher that runs every minute
DEFAULT_EVERY_S = 600.0  # at most one prune per stream per flusher instance in ten minutes


class ConsumerPruner:
    def __init__(self, client: Any, group: str, *, keep: str, min_idle_ms: int = DEFAULT_MIN_IDLE_MS,
                 every_s: float = DEFAULT_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self.keep = keep
        self.min_idle_ms = min_idle_ms
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._script = client.register_script(PRUNE_CONSUMERS.source)

    def prune(self, stream: str) -> list[str]:
        """Delete the stream's stale consumers now; returns their names."""
        self._last[stream] = self.clock()
        names = self._script(PRUNE_CONSUMERS.key_list({"stream": stream}),
                             PRUNE_CONSUMERS.arg_list({"group": self.group, "min_idle": self.min_idle_ms,
                                                       "keep": self.keep}))
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names or []]

    def maybe_prune(self, stream: str) -> list[str]:
        """``prune`` at most once per ``every_s`` per stream (one EVALSHA when it runs)."""
        last = self._last.get(stream)
        if last is not None and self.clock() - last < self.every_s:
            return []
        return self.prune(stream)
