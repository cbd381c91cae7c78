"""Webhook delivery (CONTRACT.md §8): what one attempt comes to, and the ``Deliverer`` that
claims, attempts and logs deliveries.

The state machine is pure: ``next_state`` maps a pending delivery and the outcome of its
attempt (delivered, failed, or its webhook or event gone) to what the delivery log records
(delivered; pending again at the retry schedule's next time; failed for good, dead-lettered,
past the retry window; or given up) and to the ``AttemptResult`` counted. The clock and the
jitter come in as values, so tests/unit/test_webhook_delivery.py walks every path without
threads, clocks or stores. The ``Deliverer`` does the I/O around it; the threads that run its
attempts are the worker's (gateway/services/webhook_worker.py)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.adapters.dynamo.events import EventLog, event_json
from gateway.adapters.dynamo.webhooks import DeliveryLog, Webhooks
from gateway.adapters.secret_box import SealedSecretError
from gateway.adapters.webhook_sender import Outcome, WebhookSender
from gateway.domain.events import Event
from gateway.domain.webhooks import SIGNATURE_HEADER, Attempt, Delivery, next_attempt_at, signature
from gateway.telemetry import logger


class AttemptResult(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed, tried again later
    FAILED = "failed"  # failed for good: past the retry window (the WebhookDeliveryFailures metric)
    CANCELLED = "cancelled"  # its webhook was deleted
    LOST = "lost"  # another worker logged this attempt first
    ERROR = "error"  # the attempt itself raised (DynamoDB down): the claim expires, it is retried


class AttemptOutcome(StrEnum):
    """What an attempt found."""

    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # no answer, a non-2xx answer, or a secret we cannot sign with
    GONE = "gone"  # the webhook was deleted, or the event is gone: nothing left to deliver


@dataclass(frozen=True, slots=True)
class NextState:
    """What the delivery log records after an attempt, and what the attempt counts as."""

    delivered: bool
    next_attempt_ms: int | None  # pending again from then; None: no further attempt
    result: AttemptResult  # when this worker's log write wins

    def counted(self, logged: bool) -> AttemptResult:
        """The result once the log write is known: one another worker won is ``LOST``
        (a cancellation stays one either way: nothing is left to deliver)."""
        return self.result if logged or self.result is AttemptResult.CANCELLED else AttemptResult.LOST

    @property
    def dead_lettered(self) -> bool:
        """Failed for good: kept in the log as failed, never attempted again."""
        return self.result is AttemptResult.FAILED


def next_state(delivery: Delivery, attempt: Attempt, outcome: AttemptOutcome, *, now_s: float,
               jitter: float) -> NextState:
    """Where ``delivery`` goes after ``attempt`` (its ``delivery.attempts + 1``-th), at ``now_s``
    (Unix seconds) with ``jitter`` in [0, 1): the retry schedule of gateway.domain.webhooks,
    counted from the first attempt."""
    if outcome is AttemptOutcome.GONE:
        return NextState(delivered=False, next_attempt_ms=None, result=AttemptResult.CANCELLED)
    if outcome is AttemptOutcome.DELIVERED:
        return NextState(delivered=True, next_attempt_ms=None, result=AttemptResult.DELIVERED)
    first_ms = delivery.first_attempt_ms or attempt.at_ms
    retry_at = next_attempt_at(first_attempt_at=first_ms / 1000, now=now_s, attempts=delivery.attempts + 1,
                               jitter=jitter)
    if retry_at is None:
        return NextState(delivered=False, next_attempt_ms=None, result=AttemptResult.FAILED)
    return NextState(delivered=False, next_attempt_ms=round(retry_at * 1000), result=AttemptResult.RETRYING)


class Slots(Protocol):
    """Where attempts run (the worker's ``DeliveryPool``): room per receiver and in all."""

    def has_room(self, webhook_id: str) -> bool: ...
    def full(self) -> bool: ...
    def start(self, webhook_id: str, job: Callable[[], AttemptResult]) -> None: ...


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

    def deliver(self, event: Event, pool: Slots) -> int:
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

    def retry_due(self, pool: Slots, scan: int = 1000) -> int:
        """Start the pending deliveries that are due, as far as the pool has room, looking
        at up to ``scan`` of them (past those of receivers already at their limit, so one
        receiver's backlog does not hide the others'); returns how many were started."""
        started = 0
        for seen, delivery in enumerate(self.deliveries.due(self._now_ms()), start=1):
            started += self._start(delivery, pool)
            if seen >= scan or pool.full():
                break
        return started

    def _start(self, delivery: Delivery, pool: Slots) -> bool:
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
            return self._log(delivery, AttemptOutcome.FAILED, Attempt(
                at_ms=now_ms, status_code=None, duration_ms=0,
                error="the signing secret cannot be unsealed (the pepper changed?); create the webhook again"))
        event = self.events.get(delivery.event_id)
        if found is None or event is None:
            return self._log(delivery, AttemptOutcome.GONE, Attempt(
                at_ms=now_ms, status_code=None, duration_ms=0,
                error="the webhook was deleted" if found is None else "the event is gone"))
        webhook, secret = found
        body = event_json(event).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body, int(self.clock())),
                   "Maas-Event-Id": event.id, "Maas-Delivery-Attempt": str(delivery.attempts + 1)}
        sent: Outcome = self.sender.post(webhook.url, body, headers)
        attempt = Attempt(at_ms=now_ms, status_code=sent.status_code, error=sent.error, duration_ms=sent.duration_ms)
        return self._log(delivery, AttemptOutcome.DELIVERED if sent.delivered else AttemptOutcome.FAILED, attempt)

    def _log(self, delivery: Delivery, outcome: AttemptOutcome, attempt: Attempt) -> AttemptResult:
        """Record the attempt and the state it leads to (conditional: one worker's write wins)."""
        state = next_state(delivery, attempt, outcome, now_s=self.clock(),
                           jitter=self.jitter() if outcome is AttemptOutcome.FAILED else 0.0)
        logged = self.deliveries.record(delivery, attempt, next_attempt_ms=state.next_attempt_ms,
                                        delivered=state.delivered)
        result = state.counted(logged)
        if result is AttemptResult.FAILED:
            logger.warning("webhook delivery given up", extra={
                "webhook_id": delivery.webhook_id, "event_id": delivery.event_id, "attempts": delivery.attempts + 1})
        return result
