"""The one DynamoDB table every repository shares (``pk``/``sk`` plus the ``gsi1`` index; the
item layout is in docs/ARCHITECTURE.md): how items are named, (de)serialised, written
conditionally, paged and written together in one transaction."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from gateway.errors import ConflictError, InvalidRequestError

_serializer, _deserializer = TypeSerializer(), TypeDeserializer()
GSI1 = "gsi1"
# A transaction holds at most 100 items.
TRANSACTION_ITEMS = 100

Item = dict[str, Any]
Write = dict[str, Any]  # one element of TransactWriteItems: {"Put": ...}, {"Update": ...}, ...


class DynamoClient(Protocol):
    def get_item(self, **kwargs: Any) -> dict[str, Any]: ...
    def put_item(self, **kwargs: Any) -> dict[str, Any]: ...
    def update_item(self, **kwargs: Any) -> dict[str, Any]: ...
    def query(self, **kwargs: Any) -> dict[str, Any]: ...
    def delete_item(self, **kwargs: Any) -> dict[str, Any]: ...
    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]: ...


def item_key(*parts: str) -> str:
    """The one way an item key is spelt: ``item_key("TENANT", tenant_id)`` -> ``TENANT#<id>``
    (the twin of the Redis ``tenant_key``)."""
    return "#".join(parts)


def dump(item: Item) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def load(item: dict[str, Any]) -> Item:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    plain = {k: _deserializer.deserialize(v) for k, v in last_key.items()}
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, *, pk: str, index: str | None = None) -> dict[str, Any] | None:
    """A cursor only ever continues the listing it came from: one naming another partition
    (another tenant's ledger, say) or with other key attributes than the listing's pages
    end with is rejected (400), never followed."""
    if not cursor:
        return None
    names = {"pk", "sk", "gsi1pk", "gsi1sk"} if index else {"pk", "sk"}
    partition = "gsi1pk" if index else "pk"
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        valid = (isinstance(plain, dict) and set(plain) == names and plain.get(partition) == pk
                 and all(isinstance(v, str) for v in plain.values()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        valid = False
    if not valid:
        raise InvalidRequestError("cursor is not valid for this listing", param="cursor")
    return {k: _serializer.serialize(v) for k, v in plain.items()}


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_cursor: str | None


class Table:
    def __init__(self, client: DynamoClient, name: str) -> None:
        self.client = client
        self.name = name

    def get(self, pk: str, sk: str, *, consistent: bool = False) -> Item | None:
        response = self.client.get_item(TableName=self.name, Key=dump({"pk": pk, "sk": sk}),
                                        ConsistentRead=consistent)
        return load(response["Item"]) if "Item" in response else None

    # -- writes ----------------------------------------------------------------------------
    @staticmethod
    def put_write(item: Item, *, condition: str | None = None, values: Item | None = None) -> Write:
        put: dict[str, Any] = {"Item": dump(item)}
        if condition:
            put["ConditionExpression"] = condition
        if values:
            put["ExpressionAttributeValues"] = dump(values)
        return {"Put": put}

    @staticmethod
    def new_write(item: Item) -> Write:
        """Create ``item``; it must not exist yet."""
        return Table.put_write(item, condition="attribute_not_exists(pk)")

    @staticmethod
    def replace_write(item: Item, expected_doc: str | None = None) -> Write:
        """Overwrite an existing item; with ``expected_doc``, only if it still holds that
        document (optimistic concurrency)."""
        if expected_doc is None:
            return Table.put_write(item, condition="attribute_exists(pk)")
        return Table.put_write(item, condition="attribute_exists(pk) AND doc = :expected",
                               values={":expected": expected_doc})

    def write(self, write: Write, *, conflict: str, code: str = "conflict") -> None:
        """One conditional write; a failed condition is a ConflictError saying ``conflict``."""
        (kind, request), = write.items()
        call = {"Put": self.client.put_item, "Update": self.client.update_item,
                "Delete": self.client.delete_item}[kind]
        try:
            call(TableName=self.name, **request)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise ConflictError(conflict, code=code) from error
            raise

    def transact(self, writes: list[Write], *, conflict: str, code: str = "concurrent_update") -> None:
        """All of ``writes`` or none of them; a failed condition is a ConflictError."""
        items = [{kind: {"TableName": self.name, **request}} for w in writes for kind, request in w.items()]
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException":
                reasons = {r.get("Code") for r in error.response.get("CancellationReasons", [])}
                if "ConditionalCheckFailed" in reasons:
                    raise ConflictError(conflict, code=code) from error
            raise

    # -- reads -----------------------------------------------------------------------------
    def query(self, *, pk: str, index: str | None = None, start: str | None = None, end: str | None = None,
              cursor: str | None = None, limit: int = 100, forward: bool = True,
              consistent: bool = False) -> Page:
        """One page of a partition, sort keys between ``start`` and ``end``; ``cursor``
        continues a page this same listing returned."""
        pk_name, sk_name = ("gsi1pk", "gsi1sk") if index else ("pk", "sk")
        expression = f"{pk_name} = :pk"
        values: Item = {":pk": pk}
        if start is not None and end is not None:
            expression += f" AND {sk_name} BETWEEN :start AND :end"
            values |= {":start": start, ":end": end}
        kwargs: dict[str, Any] = {
            "TableName": self.name, "KeyConditionExpression": expression,
            "ExpressionAttributeValues": dump(values), "Limit": limit, "ScanIndexForward": forward,
        }
        if index:
            kwargs["IndexName"] = index
        else:
            kwargs["ConsistentRead"] = consistent
        start_key = decode_cursor(cursor, pk=pk, index=index)
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        try:
            response = self.client.query(**kwargs)
        except ClientError as error:
            if cursor and error_code(error) == "ValidationException":
                raise InvalidRequestError("cursor is not valid for this listing", param="cursor") from None
            raise
        return Page(items=[load(item) for item in response.get("Items", [])],
                    next_cursor=encode_cursor(response.get("LastEvaluatedKey")))

    def query_all(self, **kwargs: Any) -> Iterator[Item]:
        """Every item of a partition (or a sort-key range of it), page by page."""
        cursor = None
        while True:
            page = self.query(cursor=cursor, limit=1000, **kwargs)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor
