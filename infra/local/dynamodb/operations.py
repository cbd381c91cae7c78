"""DynamoDB's operations, one function each: the request's JSON in, the response's JSON
out, DynamoErrors for everything DynamoDB refuses. Writes run in the database's one write
transaction, reads in a read snapshot (storage.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import closing
from typing import Any

import orjson

from infra.local.dynamodb import expressions as ex
from infra.local.dynamodb import values as av
from infra.local.dynamodb.errors import (
    ConditionalCheckFailedException,
    ResourceInUseException,
    TransactionCanceledException,
    ValidationException,
)
from infra.local.dynamodb.schema import StorageKey, TableSchema, check_name
from infra.local.dynamodb.storage import Database
from infra.local.dynamodb.values import Item

Request = dict[str, Any]
Response = dict[str, Any]
Operation = Callable[[Database, Request, str], Response]

OPERATIONS: dict[str, Operation] = {}
PAGE_BYTES = 1024 * 1024  # a Query or Scan page stops after 1 MB of items read, as DynamoDB's do
# What each action may carry: the request parameters this emulator reads.
_KNOWN = {"TableName", "Key", "Item", "ConditionExpression", "UpdateExpression", "ExpressionAttributeNames",
          "ExpressionAttributeValues", "ConsistentRead", "ReturnValues", "ReturnConsumedCapacity"}


def operation(function: Operation) -> Operation:
    OPERATIONS[function.__name__] = function
    return function


def _required(request: Request, name: str) -> Any:
    if request.get(name) is None:
        raise ValidationException(f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' failed "
                                  "to satisfy constraint: Member must not be null")
    return request[name]


def _only(request: Request, known: set[str]) -> None:
    """A parameter this emulator does not implement is refused, never silently ignored."""
    if unknown := sorted(set(request) - known):
        raise ValidationException(f"this local DynamoDB does not implement the parameters {unknown}")


class Expressions:
    """A request's parsed expressions and their bound names and values."""

    def __init__(self, request: Request, **grammars: str) -> None:
        """``grammars`` maps each expression parameter to its grammar (``ConditionExpression="condition"``)."""
        self.parsed = {parameter: ex.parse(grammar, parameter, request[parameter])
                       for parameter, grammar in grammars.items() if request.get(parameter) is not None}
        self.bindings = ex.Bindings(request.get("ExpressionAttributeNames"), request.get("ExpressionAttributeValues"),
                                    list(self.parsed.values()))

    def holds(self, parameter: str, item: Item | None) -> bool:
        parsed = self.parsed.get(parameter)
        return parsed is None or ex.holds(parsed.tree, item or {}, self.bindings)

    def updated(self, schema: TableSchema, old: Item | None, key_item: Item) -> Item:
        base = old if old is not None else dict(key_item)
        parsed = self.parsed.get("UpdateExpression")
        return base if parsed is None else ex.apply_update(parsed, base, self.bindings, schema.key)


# -- tables ----------------------------------------------------------------------------------
@operation
def CreateTable(db: Database, request: Request, region: str) -> Response:  # noqa: N802 - DynamoDB's names
    with db.write() as session:
        if check_name(request.get("TableName"), "tableName") in db.table_names():
            raise ResourceInUseException(f"Table already exists: {request['TableName']}")
        schema = TableSchema.create(session.next_table_id(), request)
        session.save_table(schema)
    db.register(schema)
    return {"TableDescription": schema.describe(region)}


@operation
def DescribeTable(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return {"Table": db.table(_required(request, "TableName")).describe(region)}


@operation
def ListTables(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    names = [n for n in db.table_names() if n > (request.get("ExclusiveStartTableName") or "")]
    limit = request.get("Limit") or 100
    return {"TableNames": names[:limit]} | ({"LastEvaluatedTableName": names[limit - 1]} if len(names) > limit else {})


# -- single items ----------------------------------------------------------------------------
@operation
def GetItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    _only(request, _KNOWN)
    schema = db.table(_required(request, "TableName"))
    with db.read() as session:
        item = session.get(schema, schema.key_of_request(_required(request, "Key"))[1])
    return {"Item": item} if item is not None else {}


def _write_one(db: Database, request: Request, kind: str) -> Response:
    """PutItem, UpdateItem or DeleteItem: one action, alone in its transaction."""
    _only(request, _KNOWN)
    return_values = request.get("ReturnValues") or "NONE"
    if return_values not in ("NONE", "ALL_NEW") or (return_values == "ALL_NEW" and kind != "Update"):
        raise ValidationException(f"this local DynamoDB implements ReturnValues NONE (and ALL_NEW on UpdateItem), "
                                  f"not {return_values}")
    action = _Action.of(db, kind, request)
    with db.write() as session:
        old = session.get(action.schema, action.key)
        if not action.expressions.holds("ConditionExpression", old):
            raise ConditionalCheckFailedException()
        new = action.result(old)
        action.apply(session, old, new)
    return {"Attributes": new} if return_values == "ALL_NEW" and new is not None else {}


@operation
def PutItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return _write_one(db, request, "Put")


@operation
def UpdateItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return _write_one(db, request, "Update")


@operation
def DeleteItem(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    return _write_one(db, request, "Delete")


# -- query and scan --------------------------------------------------------------------------
def _start_key(schema: TableSchema, index: str | None, request: Request) -> tuple[Item, StorageKey,
                                                                                  StorageKey | None] | None:
    """ExclusiveStartKey: the table key, and the index key when reading an index."""
    start = request.get("ExclusiveStartKey")
    if start is None:
        return None
    wanted = {n for n in schema.key + (schema.indexes[index] if index else ()) if n}
    try:
        if not isinstance(start, dict) or set(start) != wanted:
            raise ValidationException("")
        start = av.normalize_item(start)
        return start, schema.key_of_item(start), schema.index_keys(start).get(index) if index else None
    except ValidationException:
        raise ValidationException("The provided starting key is invalid: The provided key element does not match "
                                  "the schema") from None


def _page(rows: Any, expressions: Expressions, limit: int | None, last_key: Callable[[Item], Item]) -> Response:
    """Read rows until ``limit`` items were read or 1 MB; the filter applies after that, as in
    DynamoDB, so a page may hold fewer items than ``limit``."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValidationException(f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                                  "constraint: Member must have value greater than or equal to 1")
    items: list[Item] = []
    scanned = size = 0
    response: Response = {}
    with closing(rows):
        for raw in rows:
            item = orjson.loads(raw)
            scanned, size = scanned + 1, size + len(raw)
            if expressions.holds("FilterExpression", item):
                items.append(item)
            if (limit is not None and scanned >= limit) or size >= PAGE_BYTES:
                response["LastEvaluatedKey"] = last_key(item)
                break
    return {"Items": items, "Count": len(items), "ScannedCount": scanned} | response


@operation
def Query(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    _only(request, _KNOWN | {"KeyConditionExpression", "FilterExpression", "IndexName", "Limit", "ScanIndexForward",
                             "ExclusiveStartKey"})
    _required(request, "KeyConditionExpression")
    expressions = Expressions(request, KeyConditionExpression="condition", FilterExpression="condition")
    schema = db.table(_required(request, "TableName"))
    index = request.get("IndexName")
    keys = schema.key if index is None else schema.index(index)
    if index is not None and request.get("ConsistentRead"):
        raise ValidationException("Consistent reads are not supported on global secondary indexes")
    partition, bounds = ex.key_range(expressions.parsed["KeyConditionExpression"], expressions.bindings, keys)
    if "FilterExpression" in expressions.parsed:
        for name in expressions.bindings.attributes(expressions.parsed["FilterExpression"]) & set(keys):
            raise ValidationException(f"Filter Expression can only contain non-primary key attributes: Primary key "
                                      f"attribute: {name}")
    forward = request.get("ScanIndexForward", True) is not False
    after = None
    if (start := _start_key(schema, index, request)) is not None:
        start_item, table_key, index_key = start
        if start_item[keys[0]] != {"S": partition}:
            raise ValidationException("The provided starting key is outside query boundaries based on provided "
                                      "conditions")
        after = (table_key[2],) if index is None else (index_key[2], table_key[1], table_key[2])  # type: ignore[index]
    with db.read() as session:
        rows = session.query(schema, index, partition.encode(), bounds=bounds, forward=forward, after=after)
        return _page(rows, expressions, request.get("Limit"), lambda item: schema.key_attributes(item, index))


@operation
def Scan(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    """The whole table, page by page: for tests that look at everything at rest (the product never scans)."""
    _only(request, {"TableName", "Limit", "ExclusiveStartKey", "ConsistentRead", "ReturnConsumedCapacity"})
    schema = db.table(_required(request, "TableName"))
    start = _start_key(schema, None, request)
    with db.read() as session:
        return _page(session.scan(schema, start[1] if start else None), Expressions({}), request.get("Limit"),
                     schema.key_attributes)


# -- transactions ----------------------------------------------------------------------------
_GRAMMARS = {"Put": {"ConditionExpression": "condition"},
             "Update": {"UpdateExpression": "update", "ConditionExpression": "condition"},
             "Delete": {"ConditionExpression": "condition"}, "ConditionCheck": {"ConditionExpression": "condition"}}


class _Action:
    """One write (a Put, Update, Delete or ConditionCheck), checked before anything is read."""

    def __init__(self, kind: str, spec: Request, schema: TableSchema, key: StorageKey, key_item: Item,
                 item: Item | None) -> None:
        self.kind, self.spec, self.schema, self.key, self.key_item, self.item = kind, spec, schema, key, key_item, item
        self.expressions = Expressions(spec, **_GRAMMARS[kind])

    @classmethod
    def of(cls, db: Database, kind: str, spec: Request) -> _Action:
        schema = db.table(_required(spec, "TableName"))
        if kind == "Update":
            _required(spec, "UpdateExpression")
        if kind == "ConditionCheck":
            _required(spec, "ConditionExpression")
        if kind == "Put":
            item = av.normalize_item(_required(spec, "Item"))
            return cls(kind, spec, schema, schema.check_item(item), schema.key_attributes(item), item)
        key_item, key = schema.key_of_request(_required(spec, "Key"))
        return cls(kind, spec, schema, key, key_item, None)

    def result(self, old: Item | None) -> Item | None:
        """The item this action leaves (None: none), its condition having held."""
        if self.kind == "Update":
            new = self.expressions.updated(self.schema, old, self.key_item)
            self.schema.check_item(new)
            return new
        return self.item if self.kind == "Put" else old if self.kind == "ConditionCheck" else None

    def apply(self, session: Any, old: Item | None, new: Item | None) -> None:
        if new is not None and self.kind != "ConditionCheck":
            session.put(self.schema, self.key, new, old)
        elif new is None and old is not None:
            session.delete(self.schema, self.key, old)


@operation
def TransactWriteItems(db: Database, request: Request, region: str) -> Response:  # noqa: N802
    _only(request, {"TransactItems", "ClientRequestToken", "ReturnConsumedCapacity"})
    entries = _required(request, "TransactItems")
    if not isinstance(entries, list) or not 1 <= len(entries) <= 100:
        raise ValidationException("1 validation error detected: Value at 'transactItems' failed to satisfy "
                                  "constraint: Member must have length less than or equal to 100")
    actions = []
    for entry in entries:
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in _GRAMMARS:
            raise ValidationException("TransactItems can only contain one of Check, Put, Update or Delete")
        (kind, spec), = entry.items()
        _only(spec, _KNOWN - {"ReturnValues", "ConsistentRead", "ReturnConsumedCapacity"})
        actions.append(_Action.of(db, kind, spec))
    if len({(a.schema.id, a.key) for a in actions}) != len(actions):
        raise ValidationException("Transaction request cannot include multiple operations on one item")
    token = request.get("ClientRequestToken")
    digest = hashlib.sha256(orjson.dumps(entries, option=orjson.OPT_SORT_KEYS)).digest()
    with db.write() as session:
        if token is not None and session.replayed(token, digest):
            return {}
        olds = [session.get(a.schema, a.key) for a in actions]
        reasons: list[dict[str, Any]] = []
        results: list[Item | None] = []
        for action, old in zip(actions, olds, strict=True):
            result = None
            if not action.expressions.holds("ConditionExpression", old):
                reason = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
            else:
                try:
                    result, reason = action.result(old), {"Code": "None"}
                except ValidationException as error:
                    reason = {"Code": "ValidationError", "Message": error.message}
            reasons.append(reason)
            results.append(result)
        if any(reason["Code"] != "None" for reason in reasons):
            raise TransactionCanceledException(reasons)
        for action, old, result in zip(actions, olds, results, strict=True):
            action.apply(session, old, result)
    return {}
