"""The event log: business events (``gateway.domain.events``) stored once per id, listed
newest first, and handed to the webhook dispatcher through an outbox.

Items (docs/ARCHITECTURE.md):

- event: pk ``EVENT#<id>``, sk ``EVENT``; gsi1 ``TENANT#<tenant>#EVENTS`` / ``<created>#<id>``
  (a tenant's events); gsi2 ``OUTBOX`` until dispatched, then ``EVENTS``, / ``<created>#<id>``.
- key expiry: pk ``KEYEXP#<YYYY-MM-DD>``, sk ``<key id>``: ``tenant_id``, ``expires_at``.

The outbox is the ``OUTBOX`` partition of gsi2: an event is written there in the same write
that stores it (so in the caller's transaction), and the dispatcher moves it to ``EVENTS``
once it has been published. A process dying in between leaves it in the outbox, where the
next dispatcher run finds it. Listing every event reads both partitions."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from gateway.adapters.dynamo.table import Item, Table, Write, dump, error_code, item_key, load
from gateway.domain.events import Event, EventType
from gateway.errors import ConflictError, InvalidRequestError

OUTBOX, DISPATCHED = "OUTBOX", "EVENTS"
_SORT_KEY = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z#evt_[0-9a-f]{24}$")
# Pages a filtered listing reads before it answers with what it found and a cursor.
_FILTERED_PAGES = 5


def event_sort_key(event: Event) -> str:
    """Newest-first listings sort on this: the creation time, then the id."""
    created = datetime.fromtimestamp(event.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return item_key(created, event.id)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def event_json(event: Event) -> str:
    """The body webhooks receive, fixed when the event is stored: every retry sends the same bytes."""
    return json.dumps(event.body(), separators=(",", ":"), default=_json_default)


def _event_item(event: Event) -> Item:
    position = event_sort_key(event)
    return {
        "pk": item_key("EVENT", event.id), "sk": "EVENT",
        "gsi1pk": item_key("TENANT", event.tenant_id, "EVENTS"), "gsi1sk": position,
        "gsi2pk": OUTBOX, "gsi2sk": position,
        "type": str(event.type), "tenant_id": event.tenant_id, "created": event.created, "body": event_json(event),
    }


def event_from_body(body: dict[str, Any]) -> Event:
    """The event an ``Event.body()`` describes (what the bus carries)."""
    return Event(id=body["id"], type=EventType(body["type"]), created=int(body["created"]),
                 tenant_id=body["tenant_id"], data=body.get("data") or {})


def event_from_item(item: Item) -> Event:
    return event_from_body(json.loads(item["body"]))


def _encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        position = ""
    if not _SORT_KEY.match(position):
        raise InvalidRequestError("cursor is not valid for this listing", param="cursor")
    return position


@dataclass(frozen=True, slots=True)
class KeyExpiry:
    key_id: str
    tenant_id: str
    expires_at: str  # RFC 3339


@dataclass
class _Run:
    """What one partition's newest-first read found below a position."""

    items: list[Item]
    done: bool  # the partition has nothing more below the position
    reached: str | None  # when not done: the last sort key read (the next read starts below it)


class EventLog:
    def __init__(self, table: Table) -> None:
        self.table = table

    # -- writes ----------------------------------------------------------------------------
    @staticmethod
    def event_write(event: Event) -> Write:
        """Store ``event`` inside the caller's transaction. Never fails the transaction: the
        write has no condition, and every attribute is set only if absent, so writing an id
        that is already stored changes nothing (the first write's content, time and outbox
        state stay; a re-emitted event is not dispatched again). Two writes of one id in the
        same transaction are a ValidationException, as for any item."""
        item = _event_item(event)
        names = [name for name in item if name not in ("pk", "sk")]
        return {"Update": {
            "Key": dump({"pk": item["pk"], "sk": item["sk"]}),
            "UpdateExpression": "SET " + ", ".join(f"#{n} = if_not_exists(#{n}, :{n})" for n in names),
            "ExpressionAttributeNames": {f"#{n}": n for n in names},
            "ExpressionAttributeValues": dump({f":{n}": item[n] for n in names}),
        }}

    def record(self, events: list[Event]) -> list[Event]:
        """Store each event unless its id is already stored; returns the new ones. Safe to
        call again with the same events (a relay retrying after a crash)."""
        new: list[Event] = []
        seen: set[str] = set()
        for event in events:
            if event.id in seen:
                continue
            seen.add(event.id)
            try:
                self.table.write(Table.new_write(_event_item(event)), conflict=f"event {event.id} exists")
            except ConflictError:
                continue
            new.append(event)
        return new

    # -- reads -----------------------------------------------------------------------------
    def get(self, event_id: str) -> Event | None:
        item = self.table.get(item_key("EVENT", event_id), "EVENT", consistent=True)
        return event_from_item(item) if item else None

    # -- the outbox --------------------------------------------------------------------------
    def undispatched(self, limit: int = 100) -> list[Event]:
        """Events stored but not yet published, oldest first."""
        response = self.table.client.query(
            TableName=self.table.name, IndexName="gsi2", KeyConditionExpression="gsi2pk = :outbox",
            ExpressionAttributeValues=dump({":outbox": OUTBOX}), Limit=limit, ScanIndexForward=True)
        return [event_from_item(load(item)) for item in response.get("Items", [])]

    def mark_dispatched(self, events: list[Event]) -> None:
        """Take published events out of the outbox (into the ``EVENTS`` listing)."""
        for event in events:
            try:
                self.table.client.update_item(
                    TableName=self.table.name, Key=dump({"pk": item_key("EVENT", event.id), "sk": "EVENT"}),
                    UpdateExpression="SET gsi2pk = :dispatched", ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues=dump({":dispatched": DISPATCHED}))
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise

    # -- the key-expiry index (written by the billing service, read by the sweeper) ----------
    @staticmethod
    def key_expiry_write(key_id: str, tenant_id: str, expires_at: datetime) -> Write:
        """The index item that makes the expiry sweeper see a key expiring at ``expires_at``."""
        moment = expires_at.astimezone(UTC)
        return Table.put_write({
            "pk": item_key("KEYEXP", moment.date().isoformat()), "sk": key_id, "tenant_id": tenant_id,
            "expires_at": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        })

    def put_key_expiry(self, key_id: str, tenant_id: str, expires_at: datetime) -> None:
        self.table.write(self.key_expiry_write(key_id, tenant_id, expires_at), conflict="key expiry")

    def keys_expiring_on(self, day: str) -> list[KeyExpiry]:
        """The key-expiry index's entries for one UTC day (``YYYY-MM-DD``)."""
        return [KeyExpiry(key_id=item["sk"], tenant_id=item["tenant_id"], expires_at=item["expires_at"])
                for item in self.table.query_all(pk=item_key("KEYEXP", day), consistent=True)]

    # -- the listing (last: after it, ``list`` in this class body names the method) ----------
    def list(self, *, type: EventType | None = None, tenant_id: str | None = None,  # noqa: A002 - the API's name
             cursor: str | None = None, limit: int = 100) -> tuple[list[Event], str | None]:
        """Events newest first, of one type and/or one tenant; ``cursor`` continues."""
        before = _decode_cursor(cursor)
        if tenant_id is not None:
            partitions = [("gsi1", item_key("TENANT", tenant_id, "EVENTS"))]
        else:  # every event: the dispatched ones and those still in the outbox
            partitions = [("gsi2", OUTBOX), ("gsi2", DISPATCHED)]
        runs = [self._read(index, pk, before=before, limit=limit, type=type) for index, pk in partitions]
        # Everything above the highest point a partition stopped at has been seen in all of them.
        floor = max((run.reached for run in runs if not run.done and run.reached), default=None)
        found: dict[str, Item] = {}
        for run in runs:
            for item in run.items:
                found.setdefault(item["pk"], item)
        index_sk = {"gsi1": "gsi1sk", "gsi2": "gsi2sk"}[partitions[0][0]]
        ranked = sorted(found.values(), key=lambda item: item[index_sk], reverse=True)
        if floor is not None:
            ranked = [item for item in ranked if item[index_sk] >= floor]
        page = ranked[:limit]
        if len(ranked) > limit:
            next_position: str | None = page[-1][index_sk]
        else:
            next_position = floor
        return [event_from_item(item) for item in page], _encode_cursor(next_position) if next_position else None

    def _read(self, index: str, pk: str, *, before: str | None, limit: int, type: EventType | None) -> _Run:  # noqa: A002
        expression = f"{index}pk = :pk" + (f" AND {index}sk < :before" if before else "")
        values: Item = {":pk": pk} | ({":before": before} if before else {})
        kwargs: dict[str, Any] = {"TableName": self.table.name, "IndexName": index, "ScanIndexForward": False,
                                  "KeyConditionExpression": expression}
        if type is not None:
            kwargs |= {"FilterExpression": "#type = :type", "ExpressionAttributeNames": {"#type": "type"}}
            values[":type"] = str(type)
        kwargs["ExpressionAttributeValues"] = dump(values)
        items: list[Item] = []
        for _ in range(_FILTERED_PAGES if type is not None else 1):
            kwargs["Limit"] = max(limit, 100) if type is not None else limit
            response = self.table.client.query(**kwargs)
            items += [load(item) for item in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            if not last:
                return _Run(items, done=True, reached=None)
            if len(items) >= limit:
                break
            kwargs["ExclusiveStartKey"] = last
        assert last is not None
        return _Run(items, done=False, reached=load(last)[f"{index}sk"])
