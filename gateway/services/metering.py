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

Which tenants: the active-tenants index (gateway/adapters/active_tenants.py), which the
admission and settle scripts fill in the same round trip as their appends and the flusher
empties tenant by tenant once both streams of a tenant are drained. A run reads the index and
visits active tenants only: an idle tenant costs nothing per run (``sweep`` adds back any
tenant with entries the index does not list: the upgrade, and a daily safety net).

Parallel drain: ``plan`` (the dispatcher, every minute) sizes the work from the backlog and
the events flushed in the last minute and says how many workers to start; each worker
``run``s for the minute over its share of the tenants (``part`` of ``parts``, by hash slot),
visiting them again as long as there is work. Consumer groups keep parallel consumers
exactly-once; each instance reads as its own consumer. A tenant whose ledger is sharded
(a hot one) is read ``lanes`` batches at a time and its shards' transactions committed on
parallel lanes (gateway/adapters/dynamo/usage.py).

Lag: after a run, the age of the oldest entry still in any visited stream (acknowledged
entries are deleted, so what remains is exactly what is not yet in the ledger), published as
``FlusherLagSeconds``.

The flusher speaks no Redis: every command it sends is gateway/adapters/tenant_streams.py's
(the streams, the consumer group, the per-minute counts) or the index's and the pruner's
(gateway/adapters/active_tenants.py, gateway/adapters/stream_consumers.py); which stream holds
what is told by its key builder (gateway/adapters/redis_keys.py ``stream_kind``).

Tuning comes from Settings (``flusher_*``; the wiring passes it in). ``checkpoint``, when
given, is called at each step of a batch (``after_read``, ``before_commit``,
``after_commit``) with the batch's events: the fault-injection tests crash the process there.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.adapters.active_tenants import ActiveTenants, parse_unit
from gateway.adapters.dynamo import Accounts, UsageLedger
from gateway.adapters.redis_keys import STREAM_GROUP, StreamKind, events_stream, stream_kind, usage_stream
from gateway.adapters.stream_consumers import ConsumerPruner
from gateway.adapters.tenant_streams import Entry, GroupGone, StreamStoreError, TenantStreams
from gateway.adapters.tenant_streams import dead_letter_stream as dead_letter_stream  # named beside the streams
from gateway.domain.events import Event, EventType
from gateway.domain.usage import UsageEvent
from gateway.telemetry import logger

Checkpoint = Callable[[str, list[UsageEvent]], None]


class EventSink(Protocol):
    """Where the business events the admission scripts emit are stored (and from there
    delivered): gateway.adapters.dynamo.events.EventLog."""

    def record(self, events: list[Event]) -> list[Event]: ...


def event_from_fields(fields: dict[Any, Any]) -> Event:
    get = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
           for k, v in fields.items()}
    return Event(id=get["id"], type=EventType(get["type"]), created=int(get["created"]), tenant_id=get["tenant_id"],
                 data=json.loads(get["data"]))


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
    relayed: int = 0  # business events handed to the event log
    idled: int = 0  # tenants drained and taken out of the active index
    errors: list[str] = field(default_factory=list)

    def add(self, part: FlushResult) -> None:
        """Counts of another run (or tenant) added to these; lag stays this result's own."""
        self.streams += part.streams
        self.batches += part.batches
        self.read += part.read
        self.written += part.written
        self.dead_lettered += part.dead_lettered
        self.relayed += part.relayed
        self.idled += part.idled
        self.errors += part.errors


@dataclass(frozen=True)
class FlushPlan:
    """What the dispatcher found and decided: the active tenants, their backlog and its age,
    and how many workers to start for the next interval."""

    active: int
    unflushed: int
    oldest_unflushed_age_s: float
    flushed_last_interval: int
    workers: int


def workers_for(*, active: int, unflushed: int, flushed_last_interval: int, events_per_worker: int,
                max_workers: int) -> int:
    """Workers for the next interval: enough for what arrived in the last one (what was
    flushed) plus what is waiting, at ``events_per_worker`` each, never more workers than
    active tenants (a tenant is drained by one worker), nor than ``max_workers``; none when
    no tenant is active."""
    if active == 0:
        return 0
    demand = unflushed + flushed_last_interval
    return max(1, min(max_workers, active, -(-demand // max(events_per_worker, 1))))


class Flusher:
    def __init__(self, *, redis_client: Any, usage: UsageLedger, accounts: Accounts, batch_size: int = 99,
                 claim_idle_ms: int = 30_000, max_batches_per_stream: int = 50, concurrency: int = 1,
                 consumer: str | None = None, clock: Callable[[], float] = time.time,
                 checkpoint: Checkpoint | None = None, seed: Callable[[str], object] | None = None,
                 events: EventSink | None = None, active: ActiveTenants | None = None, lanes: int = 1) -> None:
        self.usage = usage
        self.accounts = accounts
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.max_batches = max_batches_per_stream
        self.concurrency = concurrency
        # Unique per instance: "own pending" is then exactly what this instance failed to write.
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.checkpoint = checkpoint
        # An unseeded tenant's stream is left alone (the seed reads it); ``seed`` seeds it.
        self.seed = seed
        self.events = events
        self.active = active or ActiveTenants(redis_client)
        # Batches read at once from one stream, and transactions of distinct shards committed
        # at once: >1 lets a hot tenant's sharded ledger take more than one transaction's pace.
        self.lanes = lanes
        # Every Redis command goes through these adapters (gateway/adapters/tenant_streams.py).
        self.streams = TenantStreams(redis_client, consumer=self.consumer)
        self.pruner = ConsumerPruner(redis_client, STREAM_GROUP, keep=self.consumer)

    # -- one stream ----------------------------------------------------------------------
    def flush_stream(self, stream: str, result: FlushResult, deadline: float | None = None) -> None:
        self.streams.ensure_group(stream)
        try:
            self._drain(stream, result, deadline)
        except GroupGone:
            # The stream or its group vanished (a Redis restart): make it again, go on.
            self.streams.forget_group(stream)
            self.streams.ensure_group(stream)
            self._drain(stream, result, deadline)
        try:  # housekeeping: a failure here must not fail the flush
            self.pruner.maybe_prune(stream)
        except StreamStoreError:
            logger.exception("stale consumers not pruned", extra={"stream": stream})

    def _drain(self, stream: str, result: FlushResult, deadline: float | None) -> None:
        batches = 0
        for entries in self.streams.batches(stream, count=self.batch_size * self.lanes,
                                            claim_idle_ms=self.claim_idle_ms):
            self._write(stream, entries, result)
            batches += 1
            if batches >= self.max_batches or (deadline is not None and self.clock() >= deadline):
                return

    def _checkpoint(self, point: str, events: list[UsageEvent]) -> None:
        if self.checkpoint is not None:
            self.checkpoint(point, events)

    def _write(self, stream: str, entries: list[Entry], result: FlushResult) -> None:
        if stream_kind(stream) is StreamKind.EVENTS:  # the key builder says which stream it named
            self._relay(stream, entries, result)
            return
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
        self._checkpoint("after_read", events)
        if events:
            self._checkpoint("before_commit", events)
            result.written += self.usage.record_usage(events, lanes=self.lanes)
        self._checkpoint("after_commit", events)
        self._acknowledge(stream, ids, poison, result)

    def _relay(self, stream: str, entries: list[Entry], result: FlushResult) -> None:
        """Business events to the event log (idempotent by event id), then acknowledged."""
        assert self.events is not None
        ids = [entry_id for entry_id, _ in entries]
        events, poison = [], []
        for entry_id, fields in entries:
            if not fields:
                continue
            try:
                events.append(event_from_fields(fields))
            except (KeyError, ValueError, TypeError):
                poison.append((entry_id, fields))
        if events:
            result.relayed += len(self.events.record(events))
        self._acknowledge(stream, ids, poison, result)

    def _acknowledge(self, stream: str, ids: list[Any], poison: list[Entry], result: FlushResult) -> None:
        # Committed: now, and only now, acknowledge and drop them (with the unreadable ones
        # moved aside for a person, never retried forever), atomically.
        for entry_id, _ in poison:
            logger.error("unreadable usage entry moved to the dead-letter stream", extra={"stream": stream,
                                                                                          "entry": str(entry_id)})
        self.streams.acknowledge(stream, ids, poison)
        result.dead_lettered += len(poison)

    # -- every stream --------------------------------------------------------------------
    def _flush_tenant(self, unit: str, deadline: float | None) -> FlushResult:
        """One work unit: a tenant's usage and events streams, or a further part of a hot
        tenant's usage stream (``<tenant>#<part>``)."""
        result = FlushResult(streams=1)
        if deadline is not None and self.clock() >= deadline:
            return result
        tenant_id, part = parse_unit(unit)
        stream = usage_stream(tenant_id, part)
        try:
            seeded, pending, events = self.streams.look(tenant_id, part)
            if not seeded:
                # Redis does not hold the tenant's counters: seeding will count what is on the
                # stream, so it must stay there (and the tenant listed) until then.
                if pending and self.seed is not None:
                    self.seed(tenant_id)
                return result
            self.flush_stream(stream, result, deadline)
            if events and not part and self.events is not None:
                self.flush_stream(events_stream(tenant_id), result, deadline)
            if not result.errors:
                result.idled = int(self.active.deactivate(unit))  # drained: idle from now on
        except Exception as error:  # one tenant's failure must not stop the others
            logger.exception("flush failed; the entries stay pending", extra={"stream": stream})
            result.errors.append(f"{stream}: {type(error).__name__}")
        return result

    def flush(self, tenant_ids: list[str] | None = None, *, deadline: float | None = None, part: int = 0,
              parts: int = 1) -> FlushResult:
        """One run over the active index's work units (those of worker ``part`` of ``parts``),
        or over ``tenant_ids`` (tenants, or units ``<tenant>#<part>``), ``concurrency`` at a time
        (each stream by one thread, in order). ``deadline`` (a ``clock()`` value) stops it
        starting new batches; what is left is taken by the next run."""
        if tenant_ids is None:
            try:
                tenant_ids = self.active.members(part, parts)
            except StreamStoreError as error:  # no index, no work list: the run fails, no lag is known
                logger.exception("the active-tenants index could not be read")
                return FlushResult(errors=[f"index: {type(error).__name__}"])
        tenants = tenant_ids
        if self.concurrency > 1 and len(tenants) > 1:
            with ThreadPoolExecutor(min(self.concurrency, len(tenants)), thread_name_prefix="flush") as pool:
                each = list(pool.map(lambda tenant_id: self._flush_tenant(tenant_id, deadline), tenants))
        else:
            each = [self._flush_tenant(tenant_id, deadline) for tenant_id in tenants]
        result = FlushResult()
        for one in each:
            result.add(one)
        # A tenant taken out of the index had both streams empty: no lag to measure there.
        listed = [unit for unit, one in zip(tenants, each, strict=True) if not one.idled]
        try:
            self._measure_lag(listed, result)
        except Exception as error:
            logger.exception("lag could not be measured")
            result.errors.append(f"lag: {type(error).__name__}")
        return result

    def run(self, *, until: float, deadline: float | None = None, part: int = 0, parts: int = 1,
            idle_s: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> FlushResult:
        """A worker: flush its share of the active tenants (``part`` of ``parts``), pass after
        pass, starting passes until ``until`` (at least one) and batches until ``deadline``
        (a ``clock()`` value, the function's own limit; default ``until``), pausing ``idle_s``
        when a pass found nothing. The counts add up over the passes; the lag is the last
        pass's."""
        total = FlushResult()
        batches_until = until if deadline is None else deadline
        until = min(until, batches_until)
        while True:
            result = self.flush(deadline=batches_until, part=part, parts=parts)
            total.add(result)
            total.unflushed, total.lag_known = result.unflushed, result.lag_known
            total.oldest_unflushed_age_s = result.oldest_unflushed_age_s
            try:
                self._count_flushed(result.written)
            except StreamStoreError:
                logger.warning("flushed count not recorded")
            if self.clock() >= until:
                return total
            if result.errors or not (result.read or result.relayed):  # nothing to do, or a store failing
                sleep(max(0.0, min(idle_s, until - self.clock())))

    def plan(self, *, max_workers: int, events_per_worker: int, interval_s: int = 60) -> FlushPlan:
        """The dispatcher's look at the work: the active tenants, what they hold and how old
        it is, the events flushed in the last ``interval_s``, and the workers that calls for."""
        tenants = self.active.members()
        result = FlushResult()
        self._measure_lag(tenants, result)
        flushed = self._flushed_in_last(interval_s)
        workers = workers_for(active=len(tenants), unflushed=result.unflushed, flushed_last_interval=flushed,
                              events_per_worker=events_per_worker, max_workers=max_workers)
        return FlushPlan(active=len(tenants), unflushed=result.unflushed,
                         oldest_unflushed_age_s=result.oldest_unflushed_age_s, flushed_last_interval=flushed,
                         workers=workers)

    def sweep(self, tenant_ids: list[str] | None = None, chunk: int = 1000) -> list[str]:
        """List again every tenant whose streams hold entries but which the index does not
        (after the upgrade that brought the index; a daily safety net): one pipelined XLEN
        pair per tenant, never on the request path. Returns the tenants listed."""
        tenants = tenant_ids if tenant_ids is not None else self.accounts.all_tenant_ids()
        found: list[str] = []
        for i in range(0, len(tenants), chunk):
            found += self.active.mark(tenants[i : i + chunk])
        return found

    def _count_flushed(self, written: int) -> None:
        if written:
            self.streams.count_flushed(int(self.clock() // 60), written)

    def _flushed_in_last(self, interval_s: int) -> int:
        now_minute = int(self.clock() // 60)
        minutes = max(1, -(-interval_s // 60))
        return self.streams.flushed_in(range(now_minute - minutes, now_minute))

    def _measure_lag(self, tenant_ids: list[str], result: FlushResult) -> None:
        if not tenant_ids:
            result.lag_known = True
            return
        heads = self.streams.heads([usage_stream(*parse_unit(unit)) for unit in tenant_ids])
        now_ms = self.clock() * 1000
        for first_ms, length in heads:
            result.unflushed += length
            if first_ms is not None:
                result.oldest_unflushed_age_s = max(result.oldest_unflushed_age_s, (now_ms - first_ms) / 1000)
        result.lag_known = True
