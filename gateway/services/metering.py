"""The flusher: drains the tenants' usage streams into the DynamoDB ledger, exactly once.

Each stream is read through a consumer group; a batch is written (ledger items and rollup
increments in transactions keyed by request id, so a redelivered event is a no-op) and
only then acknowledged and deleted. Entries a crashed flusher left pending are claimed
back after ``claim_idle_ms``. A crash at any point loses nothing and counts nothing twice.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import redis

from gateway.adapters.dynamo import Store
from gateway.adapters.redis_store import STREAM_GROUP, usage_stream
from gateway.models.records import UsageEvent
from gateway.telemetry import logger


@dataclass
class FlushResult:
    streams: int = 0
    read: int = 0
    written: int = 0
    oldest_unflushed_age_s: float = 0.0
    errors: list[str] = field(default_factory=list)


class Flusher:
    def __init__(self, *, redis_client: redis.Redis, store: Store, batch_size: int = 500,
                 claim_idle_ms: int = 30_000, consumer: str | None = None) -> None:
        self.redis = redis_client
        self.store = store
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._groups: set[str] = set()

    def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            self.redis.xgroup_create(stream, STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups.add(stream)

    def flush_stream(self, stream: str, result: FlushResult) -> None:
        self._ensure_group(stream)
        # First what a crashed flusher left pending, then what is new.
        _, claimed, _ = self.redis.xautoclaim(stream, STREAM_GROUP, self.consumer,
                                              min_idle_time=self.claim_idle_ms, start_id="0-0",
                                              count=self.batch_size)
        self._write(stream, claimed, result)
        while True:
            response = self.redis.xreadgroup(STREAM_GROUP, self.consumer, {stream: ">"},
                                             count=self.batch_size)
            entries = response[0][1] if response else []
            if not entries:
                return
            self._write(stream, entries, result)
            if len(entries) < self.batch_size:
                return

    def _write(self, stream: str, entries: list, result: FlushResult) -> None:
        entries = [(entry_id, fields) for entry_id, fields in entries if fields]
        if not entries:
            return
        events = [UsageEvent.from_fields(fields) for _, fields in entries]
        result.read += len(events)
        oldest = min(event.timestamp_ms for event in events)
        result.oldest_unflushed_age_s = max(result.oldest_unflushed_age_s, time.time() - oldest / 1000)
        result.written += self.store.record_usage(events)
        ids = [entry_id for entry_id, _ in entries]
        # Committed: now, and only now, acknowledge and drop them from the stream.
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, STREAM_GROUP, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()

    def flush(self, tenant_ids: list[str] | None = None) -> FlushResult:
        result = FlushResult()
        for tenant_id in tenant_ids if tenant_ids is not None else self.store.all_tenant_ids():
            stream = usage_stream(tenant_id)
            result.streams += 1
            try:
                self.flush_stream(stream, result)
            except Exception as error:  # one tenant's failure must not stop the others
                logger.exception("flush failed", extra={"stream": stream})
                result.errors.append(f"{stream}: {type(error).__name__}")
        return result
