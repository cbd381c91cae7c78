"""A small thread-safe read-through cache with a time to live, bounded as an LRU."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live ``ttl_s``; past ``max_entries`` the least recently used go first.

    With ``max_misses`` a lookup that found nothing is remembered too, in an LRU of its own (so
    a flood of unknown keys never pushes out the known ones): an unknown key then costs one
    store read per container and afterwards takes the same path, in the same time, as a known
    one. Only for keys that cannot come to exist later (random ids)."""

    def __init__(self, ttl_s: float, loader: Callable[[K], V | None], *, max_entries: int = 10_000,
                 max_misses: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.loader, self.max_entries, self.max_misses = ttl_s, loader, max_entries, max_misses
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._misses: OrderedDict[K, float] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        now = self.clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                self._entries.move_to_end(key)
                return hit[1]
            missed_at = self._misses.get(key)
            if missed_at is not None and now - missed_at < self.ttl_s:
                self._misses.move_to_end(key)
                return None
        return self.put(key, self.loader(key), now)

    def put(self, key: K, value: V | None, now: float | None = None) -> V | None:
        """Remember what a read outside the cache found (a strongly consistent one, say)."""
        now = self.clock() if now is None else now
        with self._lock:
            if value is not None:
                _remember(self._entries, key, (now, value), self.max_entries)
                self._misses.pop(key, None)
            elif self.max_misses:
                _remember(self._misses, key, now, self.max_misses)
        return value

    def known_missing(self, key: K) -> bool:
        with self._lock:
            missed_at = self._misses.get(key)
            return missed_at is not None and self.clock() - missed_at < self.ttl_s


def _remember(entries: OrderedDict[K, V], key: K, value: V, bound: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > bound:
        entries.popitem(last=False)
