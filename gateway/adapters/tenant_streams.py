"""The tenants' streams in Redis, as the flusher (gateway/services/metering.py) reads them: every
Redis command the flusher sends is here, so the services layer speaks no Redis.

A stream is read through the consumer group ``STREAM_GROUP`` as one consumer (the flusher
instance): first its own pending entries, then idle entries other (crashed) consumers left
(XAUTOCLAIM), then new ones. A batch is acknowledged and deleted, with its unreadable entries
moved to the dead-letter stream, in one MULTI. Beside the streams: a tenant's look (seeded? how
much waits?), the oldest entry of each stream (the lag), and the events flushed per minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from gateway.adapters.redis_keys import STREAM_GROUP, events_stream, tenant_key, usage_stream

# What a failing stream store raises (redis-py's base error, under the name the flusher catches:
# the services never import redis).
StreamStoreError = redis.RedisError

Entry = tuple[Any, Any]  # (entry id, fields) as the client returns them

# The events flushed per clock minute, counted by the workers (the dispatcher's measure of the
# arrival rate: the backlog alone reads near zero while the workers keep up).
FLUSHED_KEY = "{flush}:flushed:"


class GroupGone(Exception):
    """The stream or its consumer group vanished (a Redis restart): make the group again."""


def dead_letter_stream(stream: str) -> str:
    """Where entries that do not parse as usage events go (same hash tag, same shard)."""
    return f"{stream}:dead"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def _group_of(stream: str) -> Iterator[None]:
    try:
        yield
    except redis.ResponseError as error:
        if "NOGROUP" not in str(error):
            raise
        raise GroupGone(stream) from error


class TenantStreams:
    def __init__(self, client: Any, *, consumer: str, group: str = STREAM_GROUP) -> None:
        self.client = client
        self.consumer = consumer
        self.group = group
        self._groups: set[str] = set()

    # -- the consumer group ----------------------------------------------------------------
    def ensure_group(self, stream: str) -> None:
        """The group exists on ``stream`` (made once per instance; the stream too if need be)."""
        if stream in self._groups:
            return
        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups.add(stream)

    def forget_group(self, stream: str) -> None:
        self._groups.discard(stream)

    def batches(self, stream: str, *, count: int, claim_idle_ms: int) -> Iterator[list[Entry]]:
        """Batches of up to ``count``: this consumer's own pending entries (a write that
        failed), then idle entries of other (crashed) consumers, then new entries. A vanished
        group is ``GroupGone``."""
        with _group_of(stream):
            yield from self._batches(stream, count, claim_idle_ms)

    def _batches(self, stream: str, count: int, claim_idle_ms: int) -> Iterator[list[Entry]]:
        last: Any = "0"
        while True:
            own = self.client.xreadgroup(self.group, self.consumer, {stream: last}, count=count)
            entries = own[0][1] if own else []
            if not entries:
                break
            yield entries
            last = entries[-1][0]
            if len(entries) < count:
                break
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(stream, self.group, self.consumer, min_idle_time=claim_idle_ms,
                                           start_id=cursor, count=count)
            cursor, claimed = reply[0], reply[1]
            if claimed:
                yield claimed
            if not claimed or cursor in (b"0-0", "0-0"):
                break
        while True:
            response = self.client.xreadgroup(self.group, self.consumer, {stream: ">"}, count=count)
            entries = response[0][1] if response else []
            if not entries:
                return
            yield entries
            if len(entries) < count:
                return

    def acknowledge(self, stream: str, ids: list[Any], poison: list[Entry]) -> None:
        """Acknowledge and delete ``ids``, moving ``poison`` to the dead-letter stream, atomically
        (an entry left acknowledged but not deleted would read as lag forever)."""
        pipe = self.client.pipeline(transaction=True)
        for entry_id, fields in poison:
            pipe.xadd(dead_letter_stream(stream), {**fields, "_source_id": entry_id})
        pipe.xack(stream, self.group, *ids)
        pipe.xdel(stream, *ids)
        with _group_of(stream):
            pipe.execute()

    # -- what waits ------------------------------------------------------------------------
    def look(self, tenant_id: str, part: int) -> tuple[bool, int, int]:
        """(Redis holds the tenant's counters, entries on the usage stream ``part``, entries
        on the events stream (part 0; part > 0 has none: that stream again)), one round trip."""
        stream = usage_stream(tenant_id, part)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(tenant_key(tenant_id, "cfg"))
        pipe.xlen(stream)
        pipe.xlen(events_stream(tenant_id) if not part else stream)
        seeded, pending, events = pipe.execute()
        return bool(seeded), int(pending), int(events)

    def heads(self, streams: list[str]) -> list[tuple[int | None, int]]:
        """For each stream: the time (ms) of its oldest entry (None when empty) and its length,
        in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            pipe.xrange(stream, count=1)
            pipe.xlen(stream)
        replies = pipe.execute()
        return [(int(_text(first[0][0]).split("-")[0]) if first else None, int(length))
                for first, length in zip(replies[::2], replies[1::2], strict=True)]

    # -- the events flushed per minute -----------------------------------------------------
    def count_flushed(self, minute: int, written: int) -> None:
        key = f"{FLUSHED_KEY}{minute}"
        pipe = self.client.pipeline(transaction=False)
        pipe.incrby(key, written)
        pipe.expire(key, 600)
        pipe.execute()

    def flushed_in(self, minutes: range) -> int:
        values = self.client.mget([f"{FLUSHED_KEY}{m}" for m in minutes])
        return sum(int(v) for v in values if v)
