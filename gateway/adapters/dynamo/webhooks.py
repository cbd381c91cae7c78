"""Webhooks (receivers, their sealed signing secrets) and the delivery log.

Items (docs/ARCHITECTURE.md):

- webhook: pk ``WEBHOOKS``, sk ``<webhook id>``.
- delivery: pk ``DELIVERY#<webhook id>#<event id>``, sk ``DELIVERY``; gsi1
  ``WEBHOOK#<webhook id>#DELIVERIES`` / ``<created>#<event id>``; while pending, gsi2 ``RETRY``
  / ``<next attempt>#<webhook id>#<event id>``.

Webhooks share one partition, read with a strongly consistent query on every dispatch: a
webhook created a moment before an event gets it. There are few (``MAX_WEBHOOKS``).
A delivery's key is its (webhook, event) pair, created once (conditionally): an event
dispatched twice is delivered once per webhook. Pending deliveries sit in gsi2's ``RETRY``
partition, ordered by when they are due; a worker claims one by moving its due time past
the attempt (a conditional update), so two workers never attempt it at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from gateway.adapters.dynamo.table import Item, Table, Write, dump, error_code, item_key, load
from gateway.adapters.secret_box import SecretBox
from gateway.domain.events import Event, EventType
from gateway.domain.webhooks import Attempt, Delivery, Webhook

WEBHOOKS = "WEBHOOKS"
RETRY = "RETRY"


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _delivery_key(webhook_id: str, event_id: str) -> dict[str, Any]:
    return {"pk": item_key("DELIVERY", webhook_id, event_id), "sk": "DELIVERY"}


def _retry_position(due_ms: int, webhook_id: str, event_id: str) -> str:
    return item_key(_iso_ms(due_ms), webhook_id, event_id)


def _delivery(item: Item) -> Delivery:
    history = tuple(Attempt(at_ms=int(a["at_ms"]), status_code=None if a.get("status_code") is None
                            else int(a["status_code"]), error=a.get("error"), duration_ms=int(a["duration_ms"]))
                    for a in item.get("history") or [])
    return Delivery(webhook_id=item["webhook_id"], event_id=item["event_id"], event_type=item["event_type"],
                    status=item["status"], created_ms=int(item["created_ms"]), attempts=int(item["attempts"]),
                    next_attempt_ms=int(item["next_attempt_ms"]) if item.get("next_attempt_ms") is not None else None,
                    history=history)


class Webhooks:
    def __init__(self, table: Table, box: SecretBox) -> None:
        self.table = table
        self.box = box

    @staticmethod
    def _webhook(item: Item) -> Webhook:
        return Webhook(id=item["sk"], url=item["url"], events=tuple(EventType(e) for e in item["events"]),
                       created_at=item["created_at"])

    def new_write(self, webhook: Webhook, secret: str) -> Write:
        """A new webhook, for the caller's transaction; the secret only sealed (``SecretBox``),
        bound to the webhook's id."""
        return Table.new_write({
            "pk": WEBHOOKS, "sk": webhook.id, "url": webhook.url, "events": [str(e) for e in webhook.events],
            "created_at": webhook.created_at, "secret": self.box.seal(secret, context=webhook.id),
        })

    @staticmethod
    def delete_write(webhook_id: str) -> Write:
        """Delete a webhook, for the caller's transaction; its condition fails if there is none."""
        return {"Delete": {"Key": dump({"pk": WEBHOOKS, "sk": webhook_id}),
                           "ConditionExpression": "attribute_exists(pk)"}}

    def get(self, webhook_id: str) -> Webhook | None:
        item = self.table.get(WEBHOOKS, webhook_id, consistent=True)
        return self._webhook(item) if item else None

    def get_with_secret(self, webhook_id: str) -> tuple[Webhook, str] | None:
        """The webhook and its signing secret, unsealed."""
        item = self.table.get(WEBHOOKS, webhook_id, consistent=True)
        if item is None:
            return None
        return self._webhook(item), self.box.open(item["secret"], context=webhook_id)

    def all(self) -> list[Webhook]:
        """Every webhook, oldest first."""
        webhooks = [self._webhook(item) for item in self.table.query_all(pk=WEBHOOKS, consistent=True)]
        return sorted(webhooks, key=lambda w: (w.created_at, w.id))


class DeliveryLog:
    def __init__(self, table: Table) -> None:
        self.table = table

    def open(self, webhook_id: str, event: Event, now_ms: int) -> Delivery | None:
        """Start delivering ``event`` to a webhook: a pending delivery, due now. None when
        this pair already has one (the event was dispatched before)."""
        item = _delivery_key(webhook_id, event.id) | {
            "gsi1pk": item_key("WEBHOOK", webhook_id, "DELIVERIES"), "gsi1sk": item_key(_iso_ms(now_ms), event.id),
            "gsi2pk": RETRY, "gsi2sk": _retry_position(now_ms, webhook_id, event.id),
            "webhook_id": webhook_id, "event_id": event.id, "event_type": str(event.type), "status": "pending",
            "created_ms": now_ms, "attempts": 0, "next_attempt_ms": now_ms, "history": [],
        }
        try:
            self.table.client.put_item(TableName=self.table.name, Item=dump(item),
                                       ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return _delivery(item)

    def get(self, webhook_id: str, event_id: str) -> Delivery | None:
        key = _delivery_key(webhook_id, event_id)
        item = self.table.get(key["pk"], key["sk"], consistent=True)
        return _delivery(item) if item else None

    def due(self, now_ms: int, *, page: int = 100) -> Iterator[Delivery]:
        """Pending deliveries due by ``now_ms``, the longest-waiting first, read ``page`` at a
        time as the caller goes on."""
        kwargs: dict[str, Any] = {
            "TableName": self.table.name, "IndexName": "gsi2", "Limit": page, "ScanIndexForward": True,
            "KeyConditionExpression": "gsi2pk = :retry AND gsi2sk <= :now",
            "ExpressionAttributeValues": dump({":retry": RETRY, ":now": _iso_ms(now_ms)}),
        }
        while True:
            response = self.table.client.query(**kwargs)
            yield from (_delivery(load(item)) for item in response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def claim(self, delivery: Delivery, *, until_ms: int) -> Delivery | None:
        """Take a pending delivery for one attempt: nobody else claims it before ``until_ms``
        (when a claimer that died is assumed dead). None when another worker claimed it first
        or it is no longer pending."""
        try:
            response = self.table.client.update_item(
                TableName=self.table.name, Key=dump(_delivery_key(delivery.webhook_id, delivery.event_id)),
                UpdateExpression="SET next_attempt_ms = :until, gsi2sk = :position",
                ConditionExpression="#status = :pending AND next_attempt_ms = :seen AND attempts = :attempts",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=dump({
                    ":until": until_ms, ":position": _retry_position(until_ms, delivery.webhook_id, delivery.event_id),
                    ":pending": "pending", ":seen": delivery.next_attempt_ms, ":attempts": delivery.attempts}),
                ReturnValues="ALL_NEW")
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return _delivery(load(response["Attributes"]))

    def record(self, delivery: Delivery, attempt: Attempt, *, next_attempt_ms: int | None, delivered: bool) -> bool:
        """Log an attempt of a claimed delivery: delivered, pending again until
        ``next_attempt_ms``, or (neither) failed for good. False when another worker logged
        this attempt first (a claim that outlived its lease)."""
        values: dict[str, Any] = {
            ":attempts": delivery.attempts, ":one": 1,
            ":entry": [{"at_ms": attempt.at_ms, "status_code": attempt.status_code, "error": attempt.error,
                        "duration_ms": attempt.duration_ms}],
        }
        sets = ["attempts = attempts + :one", "history = list_append(history, :entry)", "#status = :status"]
        if delivered or next_attempt_ms is None:
            values[":status"] = "delivered" if delivered else "failed"
            expression = "SET " + ", ".join(sets) + " REMOVE gsi2pk, gsi2sk, next_attempt_ms"
        else:
            values |= {":status": "pending", ":next": next_attempt_ms,
                       ":position": _retry_position(next_attempt_ms, delivery.webhook_id, delivery.event_id)}
            expression = "SET " + ", ".join([*sets, "next_attempt_ms = :next", "gsi2sk = :position"])
        try:
            self.table.client.update_item(
                TableName=self.table.name, Key=dump(_delivery_key(delivery.webhook_id, delivery.event_id)),
                UpdateExpression=expression, ConditionExpression="attempts = :attempts",
                ExpressionAttributeNames={"#status": "status"}, ExpressionAttributeValues=dump(values))
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def for_webhook(self, webhook_id: str, *, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[Delivery], str | None]:
        """A webhook's deliveries, the newest first."""
        page = self.table.query(pk=item_key("WEBHOOK", webhook_id, "DELIVERIES"), index="gsi1", cursor=cursor,
                                limit=limit, forward=False)
        return [_delivery(item) for item in page.items], page.next_cursor
