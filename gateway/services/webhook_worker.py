"""The webhook worker (CONTRACT.md §8): the threads that run attempts, the outbox drain, the
key-expiry sweeper and the loop that runs them. What an attempt does and comes to is
gateway/services/webhook_delivery.py's; the admin use cases are gateway/services/webhooks.py's.

The engine, the same code in both places:

1. ``Dispatcher``: drains the event log's outbox: opens the deliveries of each event (one
   per (webhook, event), created conditionally, for every webhook subscribed to its type),
   hands the events to a ``Publisher``, then takes them out of the outbox. Locally the
   publisher is ``DirectPublisher`` (straight to the deliverer); in AWS it is EventBridge,
   whose rule invokes the delivery function, which calls the same ``Deliverer.deliver``. A
   crash between storing and dispatching, or between publishing and clearing, leaves the
   event in the outbox: it is dispatched again, and delivered once per webhook all the same.
2. ``Deliverer.deliver``: the event's pending deliveries are claimed and attempted on a
   ``DeliveryPool`` thread.
3. ``Deliverer.retry_due``: pending deliveries whose time has come (failed attempts waiting
   out their backoff, and any a dead worker left claimed) are claimed and attempted again.
4. ``KeyExpirySweeper``: one ``key.expiring`` event per key expiring within a week.

``WebhookWorker.tick`` runs 1, 3 and 4: the local stack's loop (``maas webhooks deliver
--loop``) and, in AWS, the delivery function's schedule."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.adapters.dynamo import Accounts
from gateway.adapters.dynamo.events import EventLog
from gateway.domain.events import Event, EventType, event_id
from gateway.models.records import KeyRecord
from gateway.services.webhook_delivery import AttemptResult, Deliverer
from gateway.telemetry import logger

KEY_EXPIRY_HORIZON = timedelta(days=7)


# -- attempts on threads ---------------------------------------------------------------------
class DeliveryPool:
    """Threads that run attempts: at most ``workers`` at once and ``per_webhook`` for any one
    receiver, so a receiver that hangs holds only its own slots and never delays another's
    deliveries. Work that finds no room waits in the delivery log, due, for a later pass."""

    def __init__(self, workers: int = 32, per_webhook: int = 4) -> None:
        self.workers = workers
        self.per_webhook = per_webhook
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._futures: set[Future[None]] = set()
        self._results: list[AttemptResult] = []

    def has_room(self, webhook_id: str) -> bool:
        with self._lock:
            return len(self._futures) < self.workers and self._running[webhook_id] < self.per_webhook

    def full(self) -> bool:
        with self._lock:
            return len(self._futures) >= self.workers

    def start(self, webhook_id: str, job: Callable[[], AttemptResult]) -> None:
        with self._lock:
            self._running[webhook_id] += 1
            future = self._executor.submit(self._run, webhook_id, job)
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _run(self, webhook_id: str, job: Callable[[], AttemptResult]) -> None:
        try:
            result = job()
        except Exception:
            logger.exception("webhook attempt failed", extra={"webhook_id": webhook_id})
            result = AttemptResult.ERROR
        with self._lock:
            self._running[webhook_id] -= 1
            self._results.append(result)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def drain(self, timeout_s: float | None = None) -> list[AttemptResult]:
        """Wait for the attempts started so far; the results gathered since the last drain."""
        with self._lock:
            running = set(self._futures)
        wait_for(running, timeout=timeout_s)
        with self._lock:
            results, self._results = self._results, []
        return results


# -- dispatching -----------------------------------------------------------------------------
class Publisher(Protocol):
    def publish(self, events: list[Event]) -> list[Event]:
        """Hand events on for delivery; returns those accepted (the others stay in the outbox)."""
        ...


class DirectPublisher:
    """The local stack's publisher: no bus, the deliverer itself."""

    def __init__(self, deliverer: Deliverer, pool: DeliveryPool) -> None:
        self.deliverer = deliverer
        self.pool = pool

    def publish(self, events: list[Event]) -> list[Event]:
        for event in events:
            self.deliverer.deliver(event, self.pool)
        return events


Checkpoint = Callable[[str, list[Event]], None]


class Dispatcher:
    """Takes events out of the outbox: opens their deliveries (so the retry pass attempts
    them even if the publication is lost: a bus that gives up, a delivery function that keeps
    failing), publishes them, and only then clears them from the outbox.

    ``checkpoint``, when given, is called ``after_read`` (taken from the outbox, not yet
    published) and ``after_publish`` (published, still in the outbox): the fault-injection
    tests kill the process there."""

    def __init__(self, events: EventLog, deliverer: Deliverer, publisher: Publisher, *, batch: int = 100,
                 checkpoint: Checkpoint | None = None) -> None:
        self.events = events
        self.deliverer = deliverer
        self.publisher = publisher
        self.batch = batch
        self.checkpoint = checkpoint

    def dispatch_pending(self, max_batches: int = 10) -> int:
        """Publish what waits in the outbox, oldest first; returns how many were published."""
        published = 0
        for _ in range(max_batches):
            events = self.events.undispatched(self.batch)
            done = self.dispatch(events)
            published += done
            if len(events) < self.batch or done == 0:
                break
        return published

    def dispatch(self, events: list[Event]) -> int:
        if not events:
            return 0
        self._checkpoint("after_read", events)
        for event in events:
            self.deliverer.open(event)
        accepted = self.publisher.publish(events)
        self._checkpoint("after_publish", accepted)
        self.events.mark_dispatched(accepted)
        return len(accepted)

    def _checkpoint(self, point: str, events: list[Event]) -> None:
        if self.checkpoint is not None:
            self.checkpoint(point, events)


# -- key.expiring ----------------------------------------------------------------------------
def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _stops_at(key: KeyRecord) -> datetime | None:
    """When a key stops working: its expiry, or the end of its rotation grace if sooner (what
    the billing service indexes; ``KeyRecord.stops_at`` on main)."""
    moments = [_moment(v) for v in (key.expires_at, key.grace_until) if v]
    return min(moments) if moments else None


class KeyExpirySweeper:
    """One ``key.expiring`` event per key that stops working within the next week (its expiry,
    or the end of its rotation grace), read from the key-expiry index (one partition per UTC
    day). The id comes from the key and that moment: a daily sweep emits each once; a key
    that comes to stop at another time is announced again."""

    def __init__(self, events: EventLog, accounts: Accounts, clock: Callable[[], float] = time.time) -> None:
        self.events = events
        self.accounts = accounts
        self.clock = clock

    def sweep(self) -> list[Event]:
        """Records the events not emitted before and returns them."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        horizon = now + KEY_EXPIRY_HORIZON
        found: list[Event] = []
        day = now.date()
        while day <= horizon.date():
            for entry in self.events.keys_expiring_on(day.isoformat()):
                expires = _moment(entry.expires_at)
                if not now < expires <= horizon:
                    continue
                # The index may hold a stale entry (the key was revoked, or stops at another time).
                key = self.accounts.get_key(entry.key_id)
                if key is None or key.revoked_at is not None or _stops_at(key) != expires:
                    continue
                found.append(Event(id=event_id("key.expiring", entry.key_id, entry.expires_at),
                                   type=EventType.KEY_EXPIRING, created=int(now.timestamp()),
                                   tenant_id=entry.tenant_id,
                                   data={"key_id": entry.key_id, "expires_at": entry.expires_at}))
            day += timedelta(days=1)
        return self.events.record(found)


# -- the loop --------------------------------------------------------------------------------
class WebhookWorker:
    """One pass: dispatch the outbox, retry due deliveries, and (every ``sweep_every_s``)
    sweep for expiring keys. Attempts run on the pool; a pass never waits for them."""

    def __init__(self, *, dispatcher: Dispatcher, deliverer: Deliverer, sweeper: KeyExpirySweeper,
                 pool: DeliveryPool, sweep_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.dispatcher = dispatcher
        self.deliverer = deliverer
        self.sweeper = sweeper
        self.pool = pool
        self.sweep_every_s = sweep_every_s
        self.clock = clock
        self._next_sweep = 0.0

    def tick(self) -> dict[str, int]:
        """What this pass did, and the results of the attempts that finished since the last one."""
        done = {"dispatched": 0, "started": 0, "expiring": 0}
        steps: list[tuple[str, Callable[[], int]]] = [
            ("dispatched", self.dispatcher.dispatch_pending),
            ("started", lambda: self.deliverer.retry_due(self.pool)),
        ]
        if self.clock() >= self._next_sweep:
            self._next_sweep = self.clock() + self.sweep_every_s
            steps.append(("expiring", lambda: len(self.sweeper.sweep())))
        for name, step in steps:
            try:  # DynamoDB or the bus unavailable: the next pass tries again
                done[name] = step()
            except Exception:
                logger.exception("webhook worker step failed", extra={"step": name})
        finished = self.pool.drain(timeout_s=0)
        return done | {str(result): finished.count(result) for result in AttemptResult if result in finished}

    def run_forever(self, interval_s: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            self.tick()
            stop.wait(interval_s)
