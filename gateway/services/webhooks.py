"""Events and webhooks (CONTRACT.md §8), the admin use cases: webhooks (created with their
signing secret, listed, deleted), their deliveries and the event listing. Delivering is
gateway/services/webhook_delivery.py's (one attempt and the state it leads to) and
gateway/services/webhook_worker.py's (the threads, the outbox drain, the sweeper, the loop)."""

from __future__ import annotations

import secrets
from typing import Any

from gateway.adapters.dynamo import AuditLog
from gateway.adapters.dynamo.events import EventLog
from gateway.adapters.dynamo.webhooks import DeliveryLog, Webhooks
from gateway.adapters.webhook_sender import WebhookSender
from gateway.domain.events import EventType
from gateway.domain.webhooks import UnsafeWebhookUrl, Webhook
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
from gateway.models.records import rfc3339, utcnow
from gateway.models.webhooks import CreateWebhook
from gateway.services.calls import Call, IdempotentCalls, audit_entry

MAX_WEBHOOKS = 100


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
