"""The flusher: drains the tenants' usage streams into the DynamoDB ledger, exactly once.

Each stream is read through a consumer group in bounded batches (``batch_size`` entries,
at most ``max_batches_per_stream`` per run, and nothing new is started past the run's
deadline). A batch is written (ledger items and rollup increments in transactions keyed
by request id, so a redelivered event is a no-op) and only then acknowledged and deleted,
atomically (MULTI). A DynamoDB error leaves the batch pending: the same flusher retries
its own pending entries first on its next run, and entries a crashed flusher left pending
are claimed back (XAUTOCLAIM) once idle for ``claim_idle_ms``. A crash at any point loses
nothing and counts nothing twice.

An entry that does not parse as a usage event is moved, in the same MULTI as its
acknowledgement, to ``<stream>:dead`` (logged, counted in ``dead_lettered``) so that
one bad entry cannot stop a tenant's stream for ever.

Lag: after a run, the age of the oldest entry still in any stream (acknowledged entries
are deleted, so what remains is exactly what is not yet in the ledger), published as
``FlusherLagSeconds``.

Tuning from the environment (defaults in brackets): MAAS_FLUSHER_BATCH_SIZE [99, so a
batch of one tenant x day x model is one transaction and one rollup write],
MAAS_FLUSHER_CLAIM_IDLE_MS [30000], MAAS_FLUSHER_MAX_BATCHES [50 per stream per run],
MAAS_FLUSHER_CONCURRENCY [1; streams flushed at once, one thread each: raise it in AWS
for many tenants; moto's server fails concurrent transactions with 500s, so not locally].

Test hook, read only here: MAAS_FLUSHER_CRASH_AT=after_read|mid_commit|after_commit makes
the process SIGKILL itself at that point of its first batch (between reading and writing,
after writing half of the batch, between committing and acknowledging). Used by the fault
injection tests; never set it anywhere else.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from gateway.adapters.dynamo import Store
from gateway.adapters.redis_store import STREAM_GROUP, usage_stream
from gateway.adapters.stream_consumers import ConsumerPruner
from gateway.models.records import UsageEvent
from gateway.telemetry import logger

CRASH_ENV = "MAAS_FLUSHER_CRASH_AT"
CRASH_POINTS = ("after_read", "mid_commit", "after_commit")


def dead_letter_stream(stream: str) -> str:
    """Where entries that do not parse as usage events go (same hash tag, same shard)."""
    return f"{stream}:dead"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass
class FlushResult:
    streams: int = 0
    batches: int = 0
    read: int = 0
    written: int = 0
    # Age of the oldest event still not in the ledger after this run (0 when none);
    # lag_known is False when Redis could not be asked (then no lag is published at all,
    # and the alarm, which treats missing data as breaching, fires).
    oldest_unflushed_age_s: float = 0.0
    lag_known: bool = False
    unflushed: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


class Flusher:
    def __init__(self, *, redis_client: Any, store: Store, batch_size: int | None = None,
                 claim_idle_ms: int | None = None, max_batches_per_stream: int | None = None,
                 concurrency: int | None = None, consumer: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis_client
        self.store = store
        self.batch_size = batch_size or _env_int("MAAS_FLUSHER_BATCH_SIZE", 99)
        self.claim_idle_ms = claim_idle_ms if claim_idle_ms is not None else _env_int(
            "MAAS_FLUSHER_CLAIM_IDLE_MS", 30_000)
        self.max_batches = max_batches_per_stream or _env_int("MAAS_FLUSHER_MAX_BATCHES", 50)
        self.concurrency = concurrency or _env_int("MAAS_FLUSHER_CONCURRENCY", 1)
        # Unique per instance: "own pending" is then exactly what this instance failed to write.
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.pruner = ConsumerPruner(redis_client, STREAM_GROUP, keep=self.consumer)
        self._groups: set[str] = set()
        self._crash_at = os.environ.get(CRASH_ENV) or None
        if self._crash_at is not None and self._crash_at not in CRASH_POINTS:
            raise ValueError(f"{CRASH_ENV} must be one of {', '.join(CRASH_POINTS)}")

    # -- one stream ----------------------------------------------------------------------
    def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            self.redis.xgroup_create(stream, STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups.add(stream)

    def _batches(self, stream: str) -> Any:
        """Yields batches: this consumer's own pending entries (a write that failed), then
        idle entries of other (crashed) consumers, then new entries."""
        last: Any = "0"
        while True:
            own = self.redis.xreadgroup(STREAM_GROUP, self.consumer, {stream: last}, count=self.batch_size)
            entries = own[0][1] if own else []
            if not entries:
                break
            yield entries
            last = entries[-1][0]
            if len(entries) < self.batch_size:
                break
        cursor = "0-0"
        while True:
            reply = self.redis.xautoclaim(stream, STREAM_GROUP, self.consumer, min_idle_time=self.claim_idle_ms,
                                          start_id=cursor, count=self.batch_size)
            cursor, claimed = reply[0], reply[1]
            if claimed:
                yield claimed
            if not claimed or cursor in (b"0-0", "0-0"):
                break
        while True:
            response = self.redis.xreadgroup(STREAM_GROUP, self.consumer, {stream: ">"}, count=self.batch_size)
            entries = response[0][1] if response else []
            if not entries:
                return
            yield entries
            if len(entries) < self.batch_size:
                return

    def flush_stream(self, stream: str, result: FlushResult, deadline: float | None = None) -> None:
        self._ensure_group(stream)
        try:
            self._drain(stream, result, deadline)
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream or its group vanished (a Redis restart): make it again, go on.
            self._groups.discard(stream)
            self._ensure_group(stream)
            self._drain(stream, result, deadline)
        try:  # housekeeping: a failure here must not fail the flush
            self.pruner.maybe_prune(stream)
        except redis.RedisError:
            logger.exception("stale consumers not pruned", extra={"stream": stream})

    def _drain(self, stream: str, result: FlushResult, deadline: float | None) -> None:
        batches = 0
        for entries in self._batches(stream):
            self._write(stream, entries, result)
            batches += 1
            if batches >= self.max_batches or (deadline is not None and self.clock() >= deadline):
                return

    def _crash(self, point: str) -> None:
        if self._crash_at == point:
            logger.warning("test hook: crashing the flusher", extra={"point": point})
            os.kill(os.getpid(), signal.SIGKILL)

    def _write(self, stream: str, entries: list, result: FlushResult) -> None:
        ids = [entry_id for entry_id, _ in entries]
        events, poison = [], []
        for entry_id, fields in entries:
            if not fields:
                continue  # deleted while pending: only its acknowledgement is left to do
            try:
                events.append(UsageEvent.from_fields(fields))
            except (KeyError, ValueError, TypeError):
                poison.append((entry_id, fields))
        result.batches += 1
        result.read += len(events)
        self._crash("after_read")
        if events:
            if self._crash_at == "mid_commit":
                self.store.record_usage(events[: len(events) // 2])
                self._crash("mid_commit")
            result.written += self.store.record_usage(events)
        self._crash("after_commit")
        # Committed: now, and only now, acknowledge and drop them, atomically (an entry
        # left acknowledged but not deleted would read as lag forever).
        pipe = self.redis.pipeline(transaction=True)
        for entry_id, fields in poison:  # unreadable: kept aside for a person, never retried forever
            logger.error("unreadable usage entry moved to the dead-letter stream", extra={"stream": stream,
                                                                                          "entry": str(entry_id)})
            pipe.xadd(dead_letter_stream(stream), {**fields, "_source_id": entry_id})
        result.dead_lettered += len(poison)
        pipe.xack(stream, STREAM_GROUP, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()

    # -- every stream --------------------------------------------------------------------
    def _flush_tenant(self, tenant_id: str, deadline: float | None) -> FlushResult:
        result = FlushResult(streams=1)
        if deadline is not None and self.clock() >= deadline:
            return result
        stream = usage_stream(tenant_id)
        try:
            self.flush_stream(stream, result, deadline)
        except Exception as error:  # one tenant's failure must not stop the others
            logger.exception("flush failed; the entries stay pending", extra={"stream": stream})
            result.errors.append(f"{stream}: {type(error).__name__}")
        return result

    def flush(self, tenant_ids: list[str] | None = None, *, deadline: float | None = None) -> FlushResult:
        """One run over every tenant's stream, ``concurrency`` streams at a time (each
        stream by one thread, in order). ``deadline`` (a ``clock()`` value) stops it
        starting new batches; what is left is taken by the next run."""
        tenants = tenant_ids if tenant_ids is not None else self.store.all_tenant_ids()
        if self.concurrency > 1 and len(tenants) > 1:
            with ThreadPoolExecutor(min(self.concurrency, len(tenants)), thread_name_prefix="flush") as pool:
                parts = list(pool.map(lambda tenant_id: self._flush_tenant(tenant_id, deadline), tenants))
        else:
            parts = [self._flush_tenant(tenant_id, deadline) for tenant_id in tenants]
        result = FlushResult()
        for part in parts:
            result.streams += part.streams
            result.batches += part.batches
            result.read += part.read
            result.written += part.written
            result.dead_lettered += part.dead_lettered
            result.errors += part.errors
        try:
            self._measure_lag(tenants, result)
        except Exception as error:
            logger.exception("lag could not be measured")
            result.errors.append(f"lag: {type(error).__name__}")
        return result

    def _measure_lag(self, tenant_ids: list[str], result: FlushResult) -> None:
        if not tenant_ids:
            result.lag_known = True
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant_id in tenant_ids:
            pipe.xrange(usage_stream(tenant_id), count=1)
            pipe.xlen(usage_stream(tenant_id))
        replies = pipe.execute()
        now_ms = self.clock() * 1000
        for first, length in zip(replies[::2], replies[1::2], strict=True):
            result.unflushed += int(length)
            if first:
                entry_id = first[0][0]
                entry_ms = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
                result.oldest_unflushed_age_s = max(result.oldest_unflushed_age_s, (now_ms - entry_ms) / 1000)
        result.lag_known = True


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.services.metering [--loop SECONDS]``: one flush (or a loop), as
    the scheduled function runs it; used by the fault-injection tests as a real process."""
    import argparse
    import json

    from gateway.wiring import container

    parser = argparse.ArgumentParser(prog="python -m gateway.services.metering")
    parser.add_argument("--loop", type=float, default=0.0, help="flush every SECONDS until killed")
    args = parser.parse_args(argv)
    flusher = container().flusher
    while True:
        outcome = flusher.flush()
        print(json.dumps(outcome.__dict__), flush=True)
        if not args.loop:
            return 1 if outcome.errors else 0
        time.sleep(args.loop)


if __name__ == "__main__":
    raise SystemExit(main())
