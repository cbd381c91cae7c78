"""DynamoDB: tenants, keys, plans, the usage ledger, rollups and the audit log, in one
table (``pk``/``sk`` plus the ``gsi1`` index; the layout is in docs/ARCHITECTURE.md).

Nothing here is on the hot path of a tenant request except cached reads."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from gateway.domain.plans import Plan
from gateway.errors import ConflictError, InvalidRequestError
from gateway.models.records import KeyRecord, TenantRecord, UsageEvent, rfc3339

_serializer, _deserializer = TypeSerializer(), TypeDeserializer()
# A transaction holds at most 100 items: ledger puts plus one rollup update per cell.
_TRANSACTION_ITEMS = 100
_CONFLICT_RETRIES = 3


class DynamoClient(Protocol):
    def get_item(self, **kwargs: Any) -> dict: ...
    def put_item(self, **kwargs: Any) -> dict: ...
    def update_item(self, **kwargs: Any) -> dict: ...
    def query(self, **kwargs: Any) -> dict: ...
    def delete_item(self, **kwargs: Any) -> dict: ...
    def transact_write_items(self, **kwargs: Any) -> dict: ...


def _dump(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def _load(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    plain = {k: _deserializer.deserialize(v) for k, v in last_key.items()}
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, *, pk: str) -> dict[str, Any] | None:
    """A cursor only ever continues the listing it came from: one naming another
    partition (another tenant's ledger, say) is rejected, not followed."""
    if not cursor:
        return None
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        valid = isinstance(plain, dict) and pk in (plain.get("pk"), plain.get("gsi1pk"))
    except (ValueError, binascii.Error, UnicodeDecodeError, AttributeError):
        valid = False
    if not valid:
        raise InvalidRequestError("cursor is not valid for this listing", param="cursor")
    return {k: _serializer.serialize(v) for k, v in plain.items() if isinstance(v, str)}


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _cell(event: UsageEvent) -> tuple[str, str, str]:
    return (event.tenant_id, event.date, event.model)


def pack_transactions(events: Iterable[UsageEvent]) -> list[list[UsageEvent]]:
    """Group events (one per request id) into transactions of at most 100 items, counting
    one rollup update per tenant x day x model cell in each. First fit by cell, largest
    first: a cell is split only when it alone has more than 99 events."""
    cells: dict[tuple[str, str, str], dict[str, UsageEvent]] = defaultdict(dict)
    for event in events:
        cells[_cell(event)].setdefault(event.request_id, event)
    pieces: list[list[UsageEvent]] = []
    for group in sorted(cells.values(), key=len, reverse=True):
        batch = sorted(group.values(), key=lambda e: (e.timestamp_ms, e.request_id))
        pieces += [batch[i : i + _TRANSACTION_ITEMS - 1] for i in range(0, len(batch), _TRANSACTION_ITEMS - 1)]
    chunks: list[list[UsageEvent]] = []
    sizes: list[int] = []  # items in each chunk: its events plus one per cell
    for piece in pieces:
        need = len(piece) + 1
        for i, size in enumerate(sizes):
            if size + need <= _TRANSACTION_ITEMS:
                chunks[i] += piece
                sizes[i] += need
                break
        else:
            chunks.append(list(piece))
            sizes.append(need)
    return chunks


class Store:
    def __init__(self, client: DynamoClient, table_name: str) -> None:
        self.client = client
        self.table = table_name

    # -- generic -------------------------------------------------------------------------
    def _get(self, pk: str, sk: str, *, consistent: bool = False) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table, Key=_dump({"pk": pk, "sk": sk}), ConsistentRead=consistent
        )
        return _load(response["Item"]) if "Item" in response else None

    def _put_new(self, item: dict[str, Any]) -> None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=_dump(item),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConflictError(f"{item['pk']} already exists") from error
            raise

    def _query(self, *, pk: str, index: str | None = None, start: str | None = None,
               end: str | None = None, cursor: str | None = None, limit: int = 100,
               forward: bool = True) -> Page:
        pk_name, sk_name = ("gsi1pk", "gsi1sk") if index else ("pk", "sk")
        expression = f"{pk_name} = :pk"
        values: dict[str, Any] = {":pk": pk}
        if start is not None and end is not None:
            expression += f" AND {sk_name} BETWEEN :start AND :end"
            values |= {":start": start, ":end": end}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": expression,
            "ExpressionAttributeValues": _dump(values),
            "Limit": limit,
            "ScanIndexForward": forward,
        }
        if index:
            kwargs["IndexName"] = index
        start_key = decode_cursor(cursor, pk=pk)
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        response = self.client.query(**kwargs)
        return Page(
            items=[_load(item) for item in response.get("Items", [])],
            next_cursor=encode_cursor(response.get("LastEvaluatedKey")),
        )

    def _query_all(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self._query(cursor=cursor, limit=1000, **kwargs)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- plans ---------------------------------------------------------------------------
    def put_plan(self, plan: Plan, version: int) -> None:
        self.client.put_item(
            TableName=self.table,
            Item=_dump({
                "pk": f"PLAN#{plan.name}", "sk": "PLAN", "gsi1pk": "PLANS", "gsi1sk": plan.name,
                "version": version, "doc": plan.model_dump_json(),
            }),
        )

    def get_plan(self, name: str) -> Plan | None:
        item = self._get(f"PLAN#{name}", "PLAN")
        return Plan.model_validate_json(item["doc"]) if item else None

    def list_plans(self) -> list[Plan]:
        return [Plan.model_validate_json(i["doc"]) for i in self._query_all(pk="PLANS", index="gsi1")]

    # -- tenants -------------------------------------------------------------------------
    def create_tenant(self, tenant: TenantRecord) -> None:
        self._put_new({
            "pk": f"TENANT#{tenant.id}", "sk": "TENANT",
            "gsi1pk": "TENANTS", "gsi1sk": f"{tenant.created_at}#{tenant.id}",
            "doc": tenant.model_dump_json(),
        })

    def put_tenant(self, tenant: TenantRecord, *, expected: TenantRecord | None = None) -> None:
        """Overwrite an existing tenant; with ``expected``, only if the stored record is still
        that one (optimistic concurrency: ConflictError otherwise)."""
        self._replace({
            "pk": f"TENANT#{tenant.id}", "sk": "TENANT",
            "gsi1pk": "TENANTS", "gsi1sk": f"{tenant.created_at}#{tenant.id}",
            "doc": tenant.model_dump_json(),
        }, expected.model_dump_json() if expected is not None else None)

    def _replace(self, item: dict[str, Any], expected_doc: str | None) -> None:
        condition, values = "attribute_exists(pk)", None
        if expected_doc is not None:
            condition += " AND doc = :expected"
            values = _dump({":expected": expected_doc})
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": _dump(item), "ConditionExpression": condition}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.client.put_item(**kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConflictError(f"{item['pk']} changed concurrently or is gone",
                                    code="concurrent_update") from error
            raise

    def _admin_page(self, **kwargs: Any) -> Page:
        """A page of an admin listing; a cursor this listing could not have produced (another
        partition, missing or extra key attributes) is a 400, never a store error."""
        cursor = kwargs.get("cursor")
        if cursor:
            start_key = decode_cursor(cursor, pk=kwargs["pk"])
            names = {"pk", "sk", "gsi1pk", "gsi1sk"} if kwargs.get("index") else {"pk", "sk"}
            partition = "gsi1pk" if kwargs.get("index") else "pk"
            if (start_key is None or set(start_key) != names
                    or start_key[partition] != _serializer.serialize(kwargs["pk"])):
                raise InvalidRequestError("cursor is not valid for this listing", param="cursor")
        try:
            return self._query(**kwargs)
        except ClientError as error:
            if cursor and error.response["Error"]["Code"] == "ValidationException":
                raise InvalidRequestError("cursor is not valid for this listing", param="cursor") from None
            raise

    def get_tenant(self, tenant_id: str, *, consistent: bool = False) -> TenantRecord | None:
        item = self._get(f"TENANT#{tenant_id}", "TENANT", consistent=consistent)
        return TenantRecord.model_validate_json(item["doc"]) if item else None

    def list_tenants(self, *, cursor: str | None = None, limit: int = 100) -> tuple[list[TenantRecord], str | None]:
        page = self._admin_page(pk="TENANTS", index="gsi1", cursor=cursor, limit=limit)
        return [TenantRecord.model_validate_json(i["doc"]) for i in page.items], page.next_cursor

    def all_tenant_ids(self) -> list[str]:
        return [i["pk"].removeprefix("TENANT#") for i in self._query_all(pk="TENANTS", index="gsi1")]

    # -- keys ----------------------------------------------------------------------------
    def create_key(self, key: KeyRecord) -> None:
        self._put_new({
            "pk": f"KEY#{key.id}", "sk": "KEY",
            "gsi1pk": f"TENANT#{key.tenant_id}#KEYS", "gsi1sk": f"{key.created_at}#{key.id}",
            "doc": key.model_dump_json(),
        })

    def put_key(self, key: KeyRecord, *, expected: KeyRecord | None = None) -> None:
        """Overwrite an existing key; with ``expected``, only if the stored record is still
        that one (a revocation is never lost to a concurrent rotation)."""
        self._replace({
            "pk": f"KEY#{key.id}", "sk": "KEY",
            "gsi1pk": f"TENANT#{key.tenant_id}#KEYS", "gsi1sk": f"{key.created_at}#{key.id}",
            "doc": key.model_dump_json(),
        }, expected.model_dump_json() if expected is not None else None)

    def get_key(self, key_id: str, *, consistent: bool = False) -> KeyRecord | None:
        item = self._get(f"KEY#{key_id}", "KEY", consistent=consistent)
        return KeyRecord.model_validate_json(item["doc"]) if item else None

    def list_keys(self, tenant_id: str, *, cursor: str | None = None,
                  limit: int = 100) -> tuple[list[KeyRecord], str | None]:
        page = self._admin_page(pk=f"TENANT#{tenant_id}#KEYS", index="gsi1", cursor=cursor, limit=limit)
        return [KeyRecord.model_validate_json(i["doc"]) for i in page.items], page.next_cursor

    # -- usage: ledger and rollups -------------------------------------------------------
    @staticmethod
    def _ledger_item(event: UsageEvent) -> dict[str, Any]:
        return {
            "pk": f"LEDGER#{event.tenant_id}",
            "sk": f"{rfc3339(event.moment)}#{event.request_id}",
            "request_id": event.request_id,
            "key_id": event.key_id,
            "model": event.model,
            "prompt_tokens": event.prompt_tokens,
            "timestamp_ms": event.timestamp_ms,
        }

    def _rollup_update(self, cell: tuple[str, str, str], requests: int, tokens: int) -> dict:
        tenant_id, date, model = cell
        return {
            "Update": {
                "TableName": self.table,
                "Key": _dump({"pk": f"USAGE#{tenant_id}", "sk": f"{date}#{model}"}),
                "UpdateExpression": "ADD requests :r, prompt_tokens :t SET #d = :d, #m = :m",
                "ExpressionAttributeNames": {"#d": "date", "#m": "model"},
                "ExpressionAttributeValues": _dump({":r": requests, ":t": tokens, ":d": date, ":m": model}),
            }
        }

    def _transaction(self, events: list[UsageEvent]) -> list[dict]:
        """Ledger puts first (item i is events[i], so cancellation reasons map back to
        events), then one rollup increment per tenant x day x model present."""
        items = [
            {"Put": {"TableName": self.table, "Item": _dump(self._ledger_item(event)),
                     "ConditionExpression": "attribute_not_exists(pk)"}}
            for event in events
        ]
        sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for event in events:
            cell = sums[_cell(event)]
            cell[0] += 1
            cell[1] += event.prompt_tokens
        items += [self._rollup_update(cell, requests, tokens) for cell, (requests, tokens) in sums.items()]
        return items

    def _commit(self, events: list[UsageEvent]) -> int:
        """One transaction. Events whose ledger item exists already (a redelivery) are
        dropped and the rest committed again, so each is counted once; any other failure
        propagates and the caller leaves the events unacknowledged."""
        conflicts = 0
        while events:
            try:
                self.client.transact_write_items(TransactItems=self._transaction(events))
                return len(events)
            except ClientError as error:
                if error.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                codes = [r.get("Code") or "None" for r in error.response.get("CancellationReasons", [])]
                if "TransactionConflict" in codes and conflicts < _CONFLICT_RETRIES:
                    conflicts += 1  # another flusher is updating the same rollup: try again
                    time.sleep(0.05 * conflicts)
                    continue
                duplicates = {i for i, code in enumerate(codes[: len(events)]) if code == "ConditionalCheckFailed"}
                if not duplicates or any(code not in ("None", "ConditionalCheckFailed") for code in codes):
                    raise
                events = [event for i, event in enumerate(events) if i not in duplicates]
        return 0

    def record_usage(self, events: Iterable[UsageEvent]) -> int:
        """Write ledger items and rollup increments together, idempotently: a ledger item
        is keyed by its request, so a redelivered event cancels its transaction and is
        then dropped from it. Events are packed so that a tenant x day x model cell is
        split across transactions only when it alone exceeds one (99 events): a batch of
        up to 99 events costs one rollup write per cell. Returns how many events were new."""
        written = 0
        for chunk in pack_transactions(events):
            written += self._commit(chunk)
        return written

    def _usage_query(self, pk: str, start: str, end: str, *, consistent: bool = False) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :start AND :end",
            "ExpressionAttributeValues": _dump({":pk": pk, ":start": start, ":end": end}),
            "ConsistentRead": consistent,
        }
        while True:
            response = self.client.query(**kwargs)
            for item in response.get("Items", []):
                yield _load(item)
            if not response.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def rollups(self, tenant_id: str, start: str, end: str, *, consistent: bool = False) -> list[dict[str, Any]]:
        return list(self._usage_query(f"USAGE#{tenant_id}", f"{start}#", f"{end}#\uffff", consistent=consistent))

    def ledger(self, tenant_id: str, start: str, end: str, *, cursor: str | None = None,
               limit: int = 100) -> Page:
        return self._query(
            pk=f"LEDGER#{tenant_id}", start=start, end=f"{end}\uffff", cursor=cursor, limit=limit
        )

    def ledger_all(self, tenant_id: str, start: str, end: str, *, consistent: bool = False) -> Iterator[dict[str, Any]]:
        return self._usage_query(f"LEDGER#{tenant_id}", start, f"{end}\uffff", consistent=consistent)

    def set_rollup(self, tenant_id: str, date: str, model: str, *, requests: int, prompt_tokens: int,
                   expected: tuple[int, int] | None) -> None:
        """Overwrite one rollup cell with what the ledger says (reconcile --fix), only if it
        still holds ``expected`` (requests, tokens; None = absent): a flush that lands in
        between makes this a ConflictError rather than a lost increment."""
        key = _dump({"pk": f"USAGE#{tenant_id}", "sk": f"{date}#{model}"})
        if expected is None:
            condition, values = "attribute_not_exists(pk)", {}
        else:
            condition = "requests = :er AND prompt_tokens = :et"
            values = {":er": expected[0], ":et": expected[1]}
        try:
            if requests == 0 and prompt_tokens == 0:
                if expected is not None:
                    self.client.delete_item(TableName=self.table, Key=key, ConditionExpression=condition,
                                            ExpressionAttributeValues=_dump(values))
                return
            item = {"pk": f"USAGE#{tenant_id}", "sk": f"{date}#{model}", "date": date, "model": model,
                    "requests": requests, "prompt_tokens": prompt_tokens}
            kwargs: dict[str, Any] = {"TableName": self.table, "Item": _dump(item), "ConditionExpression": condition}
            if values:
                kwargs["ExpressionAttributeValues"] = _dump(values)
            self.client.put_item(**kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConflictError(f"rollup {tenant_id} {date} {model} changed during reconcile",
                                    code="concurrent_update") from error
            raise

    # -- audit ---------------------------------------------------------------------------
    def put_audit(self, entry: dict[str, Any]) -> None:
        self.client.put_item(
            TableName=self.table,
            Item=_dump({"pk": "AUDIT", "sk": f"{entry['timestamp']}#{entry['id']}", **entry}),
        )

    def list_audit(self, *, cursor: str | None = None, limit: int = 100) -> Page:
        return self._admin_page(pk="AUDIT", cursor=cursor, limit=limit, forward=False)
