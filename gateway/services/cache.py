"""A small thread-safe read-through cache with a time to live, bounded as an LRU."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_ABSENT = object()


class TtlCache(Generic[K, V]):
    """Entries live ``ttl_s``; past ``max_entries`` the least recently used go first.

    With ``cache_misses`` a lookup that found nothing is remembered too (for ``miss_ttl_s``),
    so a flood of unknown keys costs one store read each per container and then nothing:
    an unknown key and a known one then take the same path. Without it, a record created a
    moment ago is found at once."""

    def __init__(self, ttl_s: float, loader: Callable[[K], V | None], *, max_entries: int = 10_000,
                 cache_misses: bool = False, miss_ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.loader, self.max_entries = ttl_s, loader, max_entries
        self.cache_misses = cache_misses
        self.miss_ttl_s = ttl_s if miss_ttl_s is None else miss_ttl_s
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        now = self.clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                stored_at, value = hit
                ttl = self.miss_ttl_s if value is _ABSENT else self.ttl_s
                if now - stored_at < ttl:
                    self._entries.move_to_end(key)
                    return None if value is _ABSENT else value  # type: ignore[return-value]
        value = self.loader(key)
        if value is not None or self.cache_misses:
            with self._lock:
                self._entries[key] = (now, _ABSENT if value is None else value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value
