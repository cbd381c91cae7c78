"""Events and webhooks (CONTRACT.md §8): the admin use cases (webhooks, their deliveries, the
event listing) and the delivery engine.

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

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from gateway.adapters.dynamo import Accounts, AuditLog
from gateway.adapters.dynamo.events import EventLog, event_json
from gateway.adapters.dynamo.webhooks import DeliveryLog, Webhooks
from gateway.adapters.secret_box import SealedSecretError
from gateway.adapters.webhook_sender import Outcome, WebhookSender
from gateway.domain.events import Event, EventType, event_id
from gateway.domain.webhooks import (
    SIGNATURE_HEADER,
    Attempt,
    Delivery,
    UnsafeWebhookUrl,
    Webhook,
    next_attempt_at,
    signature,
)
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
from gateway.models.records import KeyRecord, rfc3339, utcnow
from gateway.models.webhooks import CreateWebhook
from gateway.services.calls import Call, IdempotentCalls, audit_entry
from gateway.telemetry import logger

MAX_WEBHOOKS = 100
KEY_EXPIRY_HORIZON = timedelta(days=7)


# -- the admin use cases ---------------------------------------------------------------------
class WebhookService:
    """Webhooks are admin changes: each is written with its audit entry in one transaction."""

    def __init__(self, *, webhooks: Webhooks, deliveries: DeliveryLog, events: EventLog, audit: AuditLog,
                 sender: WebhookSender, calls: IdempotentCalls) -> None:
        self.webhooks = webhooks
        self.deliveries = deliveries
        self.events = events
        self.audit = audit
        self.sender = sender
        self.calls = calls

    def create(self, body: CreateWebhook, call: Call) -> dict[str, Any]:
        """The new webhook and its signing secret (shown this once; stored only sealed, and in
        the sealed answer an Idempotency-Key retry gets back)."""
        return self.calls.run(call, "webhook.create", "", body, lambda c: self._create(body, c))

    def _create(self, body: CreateWebhook, call: Call) -> dict[str, Any]:
        try:
            self.sender.check(body.url)
        except UnsafeWebhookUrl as error:
            raise InvalidRequestError(f"Invalid 'url': it {error}.", param="url", code="invalid_webhook_url") from None
        if len(self.webhooks.all()) >= MAX_WEBHOOKS:
            raise InvalidRequestError(f"At most {MAX_WEBHOOKS} webhooks; delete one first.", param="url",
                                      code="too_many_webhooks")
        webhook = Webhook(id=f"wh_{secrets.token_hex(12)}", url=body.url, events=tuple(body.events),
                          created_at=rfc3339(utcnow()))
        secret = f"whsec_{secrets.token_hex(32)}"
        answer = webhook.public() | {"secret": secret}
        writes = [self.webhooks.new_write(webhook, secret),
                  self.audit.entry_write(audit_entry(call, "webhook.create", webhook.id,
                                                     {"url": webhook.url, "events": [str(e) for e in webhook.events]}))]
        if (kept := self.calls.answer_write(call, answer)) is not None:
            writes.append(kept)
        self.webhooks.table.transact(writes, conflict="The webhook could not be created; retry.")
        return answer

    def list_webhooks(self) -> list[dict[str, Any]]:
        return [webhook.public() for webhook in self.webhooks.all()]

    def delete(self, webhook_id: str, call: Call) -> None:
        """Deliveries still pending for it are given up at their next attempt."""
        try:
            self.webhooks.table.transact(
                [self.webhooks.delete_write(webhook_id),
                 self.audit.entry_write(audit_entry(call, "webhook.delete", webhook_id, {}))],
                conflict="no such webhook")
        except ConflictError:
            raise NotFoundError(f"No webhook '{webhook_id}'.", param="webhook_id", code="webhook_not_found") from None

    def list_deliveries(self, webhook_id: str, cursor: str | None,
                        limit: int) -> tuple[list[dict[str, Any]], str | None]:
        if self.webhooks.get(webhook_id) is None:
            raise NotFoundError(f"No webhook '{webhook_id}'.", param="webhook_id", code="webhook_not_found")
        deliveries, next_cursor = self.deliveries.for_webhook(webhook_id, cursor=cursor, limit=limit)
        return [delivery.public() for delivery in deliveries], next_cursor

    def list_events(self, *, type: EventType | None, tenant_id: str | None, cursor: str | None,  # noqa: A002
                    limit: int) -> tuple[list[dict[str, Any]], str | None]:
        events, next_cursor = self.events.list(type=type, tenant_id=tenant_id, cursor=cursor, limit=limit)
        return [event.body() for event in events], next_cursor


# -- attempts on threads ---------------------------------------------------------------------
class AttemptResult(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed, tried again later
    FAILED = "failed"  # failed for good: past the retry window (the WebhookDeliveryFailures metric)
    CANCELLED = "cancelled"  # its webhook was deleted
    LOST = "lost"  # another worker logged this attempt first
    ERROR = "error"  # the attempt itself raised (DynamoDB down): the claim expires, it is retried


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


# -- delivering ------------------------------------------------------------------------------
class Deliverer:
    def __init__(self, *, webhooks: Webhooks, deliveries: DeliveryLog, events: EventLog, sender: WebhookSender,
                 claim_s: float, clock: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = random.random) -> None:
        self.webhooks = webhooks
        self.deliveries = deliveries
        self.events = events
        self.sender = sender
        # A claim outlives any attempt (the sender's timeouts), so only a dead worker's expires.
        self.claim_ms = round(claim_s * 1000)
        self.clock = clock
        self.jitter = jitter

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def open(self, event: Event) -> int:
        """Make sure every webhook subscribed to the event's type has a delivery of it (new
        ones pending and due now; an event seen before opens none); returns how many were
        opened. From then on the retry pass attempts them whatever else happens."""
        now_ms = self._now_ms()
        return sum(self.deliveries.open(webhook.id, event, now_ms) is not None
                   for webhook in self.webhooks.all() if event.type in webhook.events)

    def deliver(self, event: Event, pool: DeliveryPool) -> int:
        """Start the deliveries of ``event`` that are pending and due, opening those missing,
        as far as the pool has room; returns how many were started. Delivered ones (the
        same event handed over again) are left alone."""
        started = 0
        for webhook in self.webhooks.all():
            if event.type not in webhook.events:
                continue
            delivery = (self.deliveries.get(webhook.id, event.id)
                        or self.deliveries.open(webhook.id, event, self._now_ms()))
            if delivery is not None and delivery.is_due(self._now_ms()):
                started += self._start(delivery, pool)
        return started

    def retry_due(self, pool: DeliveryPool, scan: int = 1000) -> int:
        """Start the pending deliveries that are due, as far as the pool has room, looking
        at up to ``scan`` of them (past those of receivers already at their limit, so one
        receiver's backlog does not hide the others'); returns how many were started."""
        started = 0
        for seen, delivery in enumerate(self.deliveries.due(self._now_ms()), start=1):
            started += self._start(delivery, pool)
            if seen >= scan or pool.full():
                break
        return started

    def _start(self, delivery: Delivery, pool: DeliveryPool) -> bool:
        if not pool.has_room(delivery.webhook_id):
            return False
        claimed = self.deliveries.claim(delivery, until_ms=self._now_ms() + self.claim_ms)
        if claimed is None:
            return False
        pool.start(claimed.webhook_id, lambda: self.attempt(claimed))
        return True

    def attempt(self, delivery: Delivery) -> AttemptResult:
        """One attempt of a claimed delivery, logged: POST the event, signed."""
        now_ms = self._now_ms()
        try:
            found = self.webhooks.get_with_secret(delivery.webhook_id)
        except SealedSecretError:
            # Sealed under another pepper (rotated): no signature we could send would verify.
            return self._failed(delivery, Attempt(
                at_ms=now_ms, status_code=None, duration_ms=0,
                error="the signing secret cannot be unsealed (the pepper changed?); create the webhook again"))
        event = self.events.get(delivery.event_id)
        if found is None or event is None:
            gone = Attempt(at_ms=now_ms, status_code=None, duration_ms=0,
                           error="the webhook was deleted" if found is None else "the event is gone")
            self.deliveries.record(delivery, gone, next_attempt_ms=None, delivered=False)
            return AttemptResult.CANCELLED
        webhook, secret = found
        body = event_json(event).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body, int(self.clock())),
                   "Maas-Event-Id": event.id, "Maas-Delivery-Attempt": str(delivery.attempts + 1)}
        outcome: Outcome = self.sender.post(webhook.url, body, headers)
        attempt = Attempt(at_ms=now_ms, status_code=outcome.status_code, error=outcome.error,
                          duration_ms=outcome.duration_ms)
        if outcome.delivered:
            logged = self.deliveries.record(delivery, attempt, next_attempt_ms=None, delivered=True)
            return AttemptResult.DELIVERED if logged else AttemptResult.LOST
        return self._failed(delivery, attempt)

    def _failed(self, delivery: Delivery, attempt: Attempt) -> AttemptResult:
        """Log a failed attempt: retried after its backoff, or given up past the window."""
        now_ms = attempt.at_ms
        first_ms = delivery.first_attempt_ms or now_ms
        retry_at = next_attempt_at(first_attempt_at=first_ms / 1000, now=self.clock(),
                                   attempts=delivery.attempts + 1, jitter=self.jitter())
        next_ms = None if retry_at is None else round(retry_at * 1000)
        if not self.deliveries.record(delivery, attempt, next_attempt_ms=next_ms, delivered=False):
            return AttemptResult.LOST
        if next_ms is None:
            logger.warning("webhook delivery given up", extra={
                "webhook_id": delivery.webhook_id, "event_id": delivery.event_id, "attempts": delivery.attempts + 1})
            return AttemptResult.FAILED
        return AttemptResult.RETRYING


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
